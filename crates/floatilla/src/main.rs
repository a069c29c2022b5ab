//! `floatilla`: the server, its administration, and (in later releases) the router agent.

mod admin;
mod options;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "floatilla",
    version,
    about = "Manage fleets of industrial routers under a floating license model."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a server node.
    Serve(serve::ServeCommand),
    /// Administer an installation directly through its database (works while servers run).
    Admin(admin::AdminCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOATILLA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(command) => command.run().await,
            Command::Admin(command) => command.run().await,
        }
    })
}
