-- wrk script: one-line sales of one item at one store, each with its own sale id and idempotency key.
-- The lightest command that goes the whole way (intake, processor, projector); with no stock the
-- processor rejects it, so the store never runs out. Set-up and use: see BENCHMARKS.md.
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local counter = 0
local key = os.getenv("TALLY_ADMIN_KEY") or "tally_admin_secret_for_bench"
local run = tostring(os.time())

function request()
  counter = counter + 1
  local id = string.format("%s-%d-%d", run, tid or 0, counter)
  local body = string.format(
    '{"sale_id":"w-%s","store_id":"store-1","lines":[{"item_id":"item-1","quantity":1,"unit_price_cents":100}]}',
    id)
  return wrk.format("POST", "/v1/sales", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. key,
    ["Idempotency-Key"] = "wrk-" .. id,
  }, body)
end
