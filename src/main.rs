//! The sipreg binary: parse the command line, start the server, run until
//! SIGINT or SIGTERM, stop cleanly.

use std::io::Write;
use std::process::ExitCode;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use sipreg::config::{Command, Config, USAGE};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cfg = match Config::from_args(std::env::args().skip(1)) {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("sipreg {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sipreg: {e}");
            return ExitCode::from(2);
        }
    };
    // Register for signals before any thread starts, so none is lost.
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sipreg: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = match sipreg::server::start(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sipreg: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Tests and scripts read this line to learn the port when --listen used :0.
    println!("sipreg listening on {} (udp+tcp)", running.local_addr);
    println!("sipreg admin on {} (http)", running.http_addr);
    let _ = std::io::stdout().flush();
    log::info!(
        "serving realm \"{}\" with {} workers{}",
        cfg.realm,
        cfg.threads,
        if cfg.no_auth {
            ", authentication DISABLED"
        } else {
            ""
        }
    );
    if let Some(sig) = signals.forever().next() {
        log::info!("signal {sig}: shutting down");
    }
    running.stop();
    ExitCode::SUCCESS
}
