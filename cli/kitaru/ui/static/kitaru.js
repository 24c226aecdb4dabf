// The dashboard's only script: live status updates and checks of the invoke form
// before it is submitted. Every page works without it (the server validates again).
"use strict";

// An element with data-live="ms" is re-rendered from the server every ms milliseconds
// (its page with ?fragment=1) until its content says the run finished.
function followLive(element) {
  const every = Number(element.dataset.live);
  const url = new URL(window.location.href);
  url.searchParams.set("fragment", "1");
  const refresh = async () => {
    try {
      const response = await fetch(url, { headers: { Accept: "text/html" } });
      if (response.ok) {
        element.innerHTML = await response.text();
      }
    } catch (error) {
      // The server is unreachable for a moment: try again on the next tick.
    }
    if (!element.querySelector("[data-finished]")) {
      window.setTimeout(refresh, every);
    }
  };
  window.setTimeout(refresh, every);
}

// JSON inputs must parse; the browser checks the other fields from their attributes.
function checkJsonFields(form) {
  let ok = true;
  for (const area of form.querySelectorAll("[data-kind=json]")) {
    const error = document.getElementById("err-" + area.name);
    let message = "";
    if (area.value.trim() !== "") {
      try {
        JSON.parse(area.value);
      } catch (problem) {
        message = "not JSON: " + problem.message + ' (quote strings: "...")';
      }
    }
    area.setCustomValidity(message);
    if (error) {
      error.textContent = message;
    }
    ok = ok && message === "";
  }
  return ok;
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-live]").forEach(followLive);
  const form = document.getElementById("invoke-form");
  if (form) {
    form.addEventListener("input", () => checkJsonFields(form));
    form.addEventListener("submit", (event) => {
      if (!checkJsonFields(form) || !form.checkValidity()) {
        event.preventDefault();
        form.reportValidity();
      }
    });
  }
});
