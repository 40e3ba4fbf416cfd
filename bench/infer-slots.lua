-- lorad — bench/infer-slots.lua: wrk script for single-row POST /infer
-- where each request names a slot at random (X-Lorad-Slot: s0 .. sN-1).
-- BENCH_BODY names a file holding the request body (one binary row of
-- little-endian f32 or one JSON row), BENCH_CT its Content-Type,
-- BENCH_SLOTS the number of slots N (1: every request names s0).
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
local body = f:read("*a")
f:close()
local ct = os.getenv("BENCH_CT") or "application/octet-stream"
local n = tonumber(os.getenv("BENCH_SLOTS") or "100")
local names = {}
for i = 0, n - 1 do
    names[i + 1] = "s" .. i
end
local seeded = 0

init = function(args)
    seeded = seeded + 1
    math.randomseed(os.time() * 1000 + seeded * 7919 + math.floor(os.clock() * 1e6))
end

request = function()
    local h = {["Content-Type"] = ct, ["X-Lorad-Slot"] = names[math.random(1, n)]}
    return wrk.format("POST", "/infer", h, body)
end
