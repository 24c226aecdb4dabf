-- Argo CD health of a kitaru.dev FlowRoute (one tag of a flow), from its Ready
-- condition: True -> Healthy; False with reason VersionNotFound (the tag points at
-- a version that does not exist) -> Degraded with the operator's message;
-- otherwise, or while the operator has not seen this generation -> Progressing.
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
    elseif condition.reason == "VersionNotFound" then
      hs.status = "Degraded"
      hs.message = condition.message or "VersionNotFound"
    else
      hs.message = condition.message or condition.reason or "Not ready"
    end
  end
end
return hs
