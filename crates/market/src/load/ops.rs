//! The kinds of request `market load` sends, their weights, and how each is
//! sent: public reads anonymously, a user's reads and writes with that
//! user's session, market-data writes with the operator token.

use rand::rngs::StdRng;
use rand::Rng;

use super::population::Population;

/// The kinds of request sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Detail,
    Price,
    Portfolio,
    Watchlist,
    Profile,
    Depth,
    List,
    Trending,
    Overview,
    View,
    Order,
    PutPrice,
    PutWatchlist,
    PutProfile,
}

const READS: &[(Op, u32)] = &[
    (Op::Detail, 25),
    (Op::Price, 20),
    (Op::Portfolio, 20),
    (Op::Watchlist, 8),
    (Op::Profile, 7),
    (Op::Depth, 5),
    (Op::List, 5),
    (Op::Trending, 5),
    (Op::Overview, 5),
];

const WRITES: &[(Op, u32)] = &[
    (Op::View, 40),
    (Op::Order, 25),
    (Op::PutPrice, 15),
    (Op::PutWatchlist, 10),
    (Op::PutProfile, 10),
];

impl Op {
    pub(super) const ALL: [Op; 14] = [
        Op::Detail,
        Op::Price,
        Op::Portfolio,
        Op::Watchlist,
        Op::Profile,
        Op::Depth,
        Op::List,
        Op::Trending,
        Op::Overview,
        Op::View,
        Op::Order,
        Op::PutPrice,
        Op::PutWatchlist,
        Op::PutProfile,
    ];

    pub(super) fn index(self) -> usize {
        Self::ALL.iter().position(|op| *op == self).unwrap_or(0)
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Op::Detail => "GET /api/instruments/{symbol}",
            Op::Price => "GET /api/stocks/{symbol}/price",
            Op::Portfolio => "GET /api/portfolios/{user_id}",
            Op::Watchlist => "GET /api/watchlists/{user_id}",
            Op::Profile => "GET /api/users/{id}/profile",
            Op::Depth => "GET /api/stocks/{symbol}/depth",
            Op::List => "GET /api/instruments?sector=",
            Op::Trending => "GET /api/trending",
            Op::Overview => "GET /api/market/overview",
            Op::View => "POST /api/instruments/{symbol}/views",
            Op::Order => "POST /api/orders",
            Op::PutPrice => "PUT /api/stocks/{symbol}/price",
            Op::PutWatchlist => "PUT /api/watchlists/{user_id}",
            Op::PutProfile => "PUT /api/users/{id}/profile",
        }
    }

    /// The next request: a write with probability `write_ratio`. Without
    /// the operator token, market-data writes are left out of the mix.
    pub(super) fn pick(rng: &mut StdRng, write_ratio: f64, operator: bool) -> Op {
        if rng.random::<f64>() < write_ratio {
            let writes: Vec<(Op, u32)> = WRITES
                .iter()
                .copied()
                .filter(|(op, _)| operator || *op != Op::PutPrice)
                .collect();
            pick(rng, &writes)
        } else {
            pick(rng, READS)
        }
    }
}

fn pick(rng: &mut StdRng, table: &[(Op, u32)]) -> Op {
    let total: u32 = table.iter().map(|(_, w)| w).sum();
    let mut n = rng.random_range(0..total);
    for (op, w) in table {
        if n < *w {
            return *op;
        }
        n -= w;
    }
    table[0].0
}

/// Send one request of kind `op`; its status.
pub(super) async fn send(
    client: &reqwest::Client,
    base: &str,
    pop: &Population,
    rng: &mut StdRng,
    op: Op,
) -> reqwest::Result<u16> {
    let user = pop.user(rng);
    let request = match op {
        Op::Detail => client.get(format!("{base}/api/instruments/{}", pop.symbol(rng))),
        Op::Price => client.get(format!("{base}/api/stocks/{}/price", pop.symbol(rng))),
        Op::Depth => client.get(format!("{base}/api/stocks/{}/depth", pop.symbol(rng))),
        Op::Portfolio => pop.as_user(client.get(format!("{base}/api/portfolios/{user}")), user),
        Op::Watchlist => pop.as_user(client.get(format!("{base}/api/watchlists/{user}")), user),
        Op::Profile => pop.as_user(client.get(format!("{base}/api/users/{user}/profile")), user),
        Op::List => {
            let sector = ["TECH", "FIN", "HLTH", "ENRG", "INDU"][rng.random_range(0..5)];
            client.get(format!("{base}/api/instruments?sector={sector}"))
        }
        Op::Trending => client.get(format!("{base}/api/trending")),
        Op::Overview => client.get(format!("{base}/api/market/overview")),
        Op::View => client.post(format!("{base}/api/instruments/{}/views", pop.symbol(rng))),
        Op::Order => pop.as_user(
            client
                .post(format!("{base}/api/orders"))
                .json(&serde_json::json!({
                    "user_id": user, "symbol": pop.symbol(rng), "side": "buy",
                    "quantity": rng.random_range(1..20),
                })),
            user,
        ),
        Op::PutPrice => {
            let price = (rng.random_range(1000..50000) as f64) / 100.0;
            pop.as_operator(
                client
                    .put(format!("{base}/api/stocks/{}/price", pop.symbol(rng)))
                    .json(
                        &serde_json::json!({ "price": price, "volume": rng.random_range(1..1000) }),
                    ),
            )
        }
        Op::PutWatchlist => {
            let symbols: Vec<&str> = (0..5).map(|_| pop.symbol(rng)).collect();
            pop.as_user(
                client
                    .put(format!("{base}/api/watchlists/{user}"))
                    .json(&serde_json::json!({ "symbols": symbols })),
                user,
            )
        }
        Op::PutProfile => {
            let n = rng.random_range(0..1000);
            pop.as_user(
                client
                    .put(format!("{base}/api/users/{user}/profile"))
                    .json(&serde_json::json!({ "display_name": format!("Trader {n}") })),
                user,
            )
        }
    };
    let response = request.send().await?;
    let status = response.status().as_u16();
    // Read the body: the latency measured is the whole answer's.
    response.bytes().await?;
    Ok(status)
}
