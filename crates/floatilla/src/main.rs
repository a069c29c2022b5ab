//! `floatilla`: the server, its administration, the router agent and the fleet simulator.

#[cfg(feature = "server")]
mod admin;
mod agent;
#[cfg(feature = "server")]
mod demo;
#[cfg(feature = "server")]
mod license;
mod options;
#[cfg(feature = "server")]
mod serve;
mod simulate;
#[cfg(feature = "server")]
mod storage;

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
    #[cfg(feature = "server")]
    Serve(Box<serve::ServeCommand>),
    /// Administer an installation directly through its database (works while servers run).
    #[cfg(feature = "server")]
    Admin(admin::AdminCommand),
    /// Run a server with a simulated fleet, to try Floatilla out.
    #[cfg(feature = "server")]
    Demo(demo::DemoCommand),
    /// Signed license files for installations on premises: keys, issuing, checking.
    #[cfg(feature = "server")]
    License(license::LicenseCommand),
    /// Run the router agent: enroll once, then keep the control channel to the server.
    Agent(agent::AgentCommand),
    /// Simulate a fleet of routers speaking the real protocol.
    Simulate(simulate::SimulateCommand),
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
    // One router needs one thread; a server or a simulated fleet uses every core.
    let runtime = match cli.command {
        Command::Agent(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(async {
        match cli.command {
            #[cfg(feature = "server")]
            Command::Serve(command) => command.run().await,
            #[cfg(feature = "server")]
            Command::Admin(command) => command.run().await,
            #[cfg(feature = "server")]
            Command::Demo(command) => command.run().await,
            #[cfg(feature = "server")]
            Command::License(command) => command.run().await,
            Command::Agent(command) => command.run().await,
            Command::Simulate(command) => command.run().await,
        }
    })
}
