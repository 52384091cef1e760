// Runs the `peers` workload through the seed articles' cache-aside for a
// fixed time and prints one JSON line: ops/s, p50, p99, hits, loads.
//
// Usage: node driver.js '<plan JSON>' with the fields
//   url, namespace, keys, theta, callers, loader_ms, ttl_secs,
//   warmup_calls, duration_ms, seed (and serve, see main)
const { connect, cacheAside } = require('./cache-aside');

// The "database": the same Product row as the Rust sides, after loader_ms.
function product(id) {
  return {
    id,
    sku: `SKU-${String(id).padStart(12, '0')}`,
    name: `Stoneware teapot no. ${id}`,
    description:
      'Hand-glazed stoneware teapot, 1.2 litres, with a removable stainless steel infuser and a drip-free spout.',
    price_cents: 2990 + (id % 1000),
    currency: 'EUR',
    stock: id % 500,
    tags: ['kitchen', 'tea', 'ceramic'],
    updated_at_ms: 1700000000000 + id,
  };
}

// Zipf(theta) over ranks 0..n-1 by inverse CDF over a table (the same
// sampler as the Rust sides).
function zipfTable(n, theta) {
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let k = 0; k < n; k++) {
    sum += 1 / Math.pow(k + 1, theta);
    cdf[k] = sum;
  }
  for (let k = 0; k < n; k++) cdf[k] /= sum;
  return cdf;
}

function sample(cdf, u) {
  let lo = 0;
  let hi = cdf.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cdf[mid] < u) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// mulberry32: a small seeded generator, so every run draws the same keys.
function rng(seed) {
  let a = seed >>> 0;
  return function next() {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function percentile(sorted, q) {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1);
  return sorted[Math.max(0, i)];
}

// One measured phase: `warmup_calls` unrecorded (split over the callers),
// then `duration_ms` recorded.
async function runPhase(plan, cdf, cacheWithTTL, phase) {
  let loads = 0;
  let errors = 0;
  let measuring = false;
  const latenciesMs = [];
  const fetchProduct = async (id) => {
    if (measuring) loads += 1;
    await sleep(plan.loader_ms);
    return product(id);
  };

  async function caller(c, seed, until, calls) {
    const next = rng(seed * 1000003 + c);
    for (let n = 0; n < calls && performance.now() < until; n++) {
      const id = sample(cdf, next());
      const key = `${plan.namespace}:product:${id}`;
      const t0 = performance.now();
      try {
        await cacheWithTTL(key, () => fetchProduct(id), plan.ttl_secs);
      } catch (e) {
        errors += 1;
      }
      if (measuring) latenciesMs.push(performance.now() - t0);
    }
  }

  async function callers(seed, ms, calls) {
    const until = performance.now() + ms;
    const running = [];
    for (let c = 0; c < plan.callers; c++) running.push(caller(c, seed, until, calls));
    await Promise.all(running);
  }

  // The warm-up draws its own keys (seed 0), as the Rust sides' does, so
  // the measured calls do not replay it.
  if (phase.warmup_calls > 0) {
    await callers(0, Infinity, Math.ceil(phase.warmup_calls / plan.callers));
  }
  measuring = true;
  const started = performance.now();
  await callers(phase.seed, phase.duration_ms, Infinity);
  const elapsedMs = performance.now() - started;
  measuring = false;

  latenciesMs.sort((a, b) => a - b);
  const ops = latenciesMs.length;
  return {
    ops,
    elapsed_ms: elapsedMs,
    ops_per_sec: ops / (elapsedMs / 1000),
    p50_us: percentile(latenciesMs, 0.5) * 1000,
    p99_us: percentile(latenciesMs, 0.99) * 1000,
    hits: ops - loads,
    loads,
    errors,
    node: process.version,
  };
}

// With `serve: true` in the plan, phases come one JSON line at a time on
// stdin ({warmup_calls, duration_ms, seed}) and each answer is one JSON line,
// so the bench can interleave this side with the others on one warm
// process; otherwise the plan's own warmup_calls/duration_ms/seed run once.
async function main() {
  const plan = JSON.parse(process.argv[2]);
  const redis = connect(plan.url);
  const cacheWithTTL = cacheAside(redis);
  await redis.ping();
  const cdf = zipfTable(plan.keys, plan.theta);

  if (!plan.serve) {
    console.log(JSON.stringify(await runPhase(plan, cdf, cacheWithTTL, plan)));
  } else {
    const lines = require('readline').createInterface({ input: process.stdin });
    for await (const line of lines) {
      if (line.trim() === '') continue;
      const result = await runPhase(plan, cdf, cacheWithTTL, JSON.parse(line));
      console.log(JSON.stringify(result));
    }
  }
  await redis.quit();
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
