-- Argo CD health of a kitaru.dev FlowDeployment (one immutable version of a flow), from
-- its Ready condition: True -> Healthy (the version can run); False -> Degraded with
-- the operator's message (e.g. NotRunnable: no image to run it with); otherwise, or
-- while the operator has not seen this generation -> Progressing.
local hs = {status = "Progressing", message = "Waiting for the operator"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then
    if condition.status == "True" then
      hs.status = "Healthy"
      hs.message = condition.message or ""
    elseif condition.status == "False" then
      hs.status = "Degraded"
      hs.message = condition.message or condition.reason or "Not ready"
    else
      hs.message = condition.message or condition.reason or "Not ready"
    end
  end
end
return hs
