//! Records when this agent was built: a router whose clock reads earlier (1970 after a power loss)
//! verifies server certificates as of this instant instead.

use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let built_at = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|epoch| epoch.parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    println!("cargo:rustc-env=FLOATILLA_AGENT_BUILT_AT={built_at}");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
}
