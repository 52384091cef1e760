// The seed articles' cache-aside, as they write it: GET; on a hit JSON.parse;
// on a miss call the loader, SETEX the JSON, return. Taken from the generic
// helper `cacheWithTTL(key, fetchFn, ttl)` of the articles (the variant
// without a console.log on every hit and miss, which would only make it
// slower). One shared ioredis client, as in the articles.
const Redis = require('ioredis');

function connect(url) {
  return new Redis(url, {
    maxRetriesPerRequest: 3,
  });
}

function cacheAside(redis) {
  return async function cacheWithTTL(key, fetchFn, ttl) {
    const cached = await redis.get(key);
    if (cached) return JSON.parse(cached);
    const data = await fetchFn();
    await redis.setex(key, ttl, JSON.stringify(data));
    return data;
  };
}

module.exports = { connect, cacheAside };
