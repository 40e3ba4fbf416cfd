-- lorad — bench/infer.lua: wrk script for single-row POST /infer.
-- BENCH_BODY names a file holding the request body (one JSON row or one
-- binary row of little-endian f32), BENCH_CT its Content-Type.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.path = "/infer"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CT") or "application/json"
