-- Argo CD health of a kitaru.dev FlowInvocation (one flow run), from status.phase:
-- Completed -> Healthy; Failed or Cancelled -> Degraded (with the operator's
-- message); Pending, Running or no status yet -> Progressing.
local hs = {status = "Progressing", message = "Waiting for the operator"}
if obj.status ~= nil and obj.status.phase ~= nil then
  local phase = obj.status.phase
  if phase == "Completed" then
    hs.status = "Healthy"
    hs.message = "Completed"
  elseif phase == "Failed" or phase == "Cancelled" then
    hs.status = "Degraded"
    hs.message = obj.status.message or phase
  else
    hs.message = phase
  end
end
return hs
