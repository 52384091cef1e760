//! Named policies from TOML (and the environment): one set of entry options
//! per kind of data.
//!
//! `cargo run -p stratacache --example policies`

use stratacache::{Cache, Policies};

const POLICIES: &str = r#"
[defaults]
jitter = 0.1

[policies.stock_price]
ttl = "2s"

[policies.session]
ttl = "30m"

[policies.profile]
ttl = "1h"
l1_ttl = "30s"
"#;

#[tokio::main]
async fn main() -> Result<(), stratacache::Error> {
    let path = std::env::temp_dir().join("stratacache-example-policies.toml");
    std::fs::write(&path, POLICIES).expect("write the example policy file");
    let cache = Cache::builder()
        .namespace("example-policies")
        .policies_from_toml_file(&path)
        .policies_from_env("EXAMPLE") // e.g. EXAMPLE__POLICIES__PROFILE__TTL=2h
        .build()
        .await?;
    for policy in cache.policies().iter() {
        println!(
            "{:<12} ttl={:?}",
            policy.name(),
            policy.options().configured_ttl()
        );
    }
    let profile = cache.policy("profile")?;
    cache
        .set("user:1:profile", &"Ada Lovelace".to_string(), profile)
        .await?;
    println!(
        "profile: {:?}",
        cache
            .get_with_options::<String>("user:1:profile", profile)
            .await?
    );

    match Policies::from_toml_str("[policies.bad]\nttl = \"soon\"") {
        Err(e) => println!("a malformed file is a clear error: {e}"),
        Ok(_) => unreachable!(),
    }
    Ok(())
}
