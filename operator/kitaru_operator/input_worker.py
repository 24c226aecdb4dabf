"""The operator's input checker process: `python -m kitaru_operator.input_worker`.

Says `{"ready": true}` once started, then reads one request per line on stdin,
`{"inputs": {...}, "schema": "<canonical JSON>"}`,
checks the inputs with `kitaru.core.inputs.validate_inputs` (bounded by
`kitaru.core.schema_bounds`), and writes one answer per line on stdout: `{"ok": true}`,
or `{"ok": false, "message": "..."}`. It imports only the pure core, so it starts in a
fraction of a second, and it exits when stdin closes (the operator stopped or died).

A check that still runs after the operator's time limit is ended by killing this process
(`input_checks`): nothing but a process boundary really bounds CPU in Python.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from kitaru.core.inputs import InvalidInputs, validate_inputs

# A schema may recurse through `properties` once per level of the inputs (at most 64)
# and jsonschema takes several frames a level; a RecursionError is reported, not fatal.
RECURSION_LIMIT = 10_000
READY = '{"ready": true}\n'


def answer(request: dict[str, Any]) -> dict[str, Any]:
    try:
        validate_inputs(request["inputs"], json.loads(request["schema"]))
    except InvalidInputs as exc:
        return {"ok": False, "message": exc.message}
    except RecursionError:
        return {"ok": False, "message": "checking the inputs nests too deeply for the schema"}
    except Exception as exc:  # a bug of ours, or of jsonschema: that one run fails
        return {"ok": False, "message": f"the inputs could not be checked: {exc!r}"[:500]}
    return {"ok": True}


def main() -> None:
    sys.setrecursionlimit(RECURSION_LIMIT)
    sys.stdout.write(READY)  # imports done: the time limit covers checks alone
    sys.stdout.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except RecursionError:  # the operator sends shallow inputs; answer, never crash
            reply = {"ok": False, "message": "the inputs are nested too deeply to check"}
        else:
            reply = answer(request)
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
