//! `gbsim` binary: parse the command line, run, print the summary.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cfg = match gbsim::cli::parse(std::env::args().skip(1)) {
        Ok(Some(cfg)) => cfg,
        Ok(None) => {
            print!("{}", gbsim::cli::usage());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("gbsim: {e}");
            eprintln!("try gbsim --help");
            return ExitCode::from(2);
        }
    };
    let json = cfg.json;
    match gbsim::run(cfg) {
        Ok(summary) => {
            if json {
                println!("{}", summary.to_json());
            } else {
                print!("{}", summary.to_text());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gbsim: {e}");
            ExitCode::from(2)
        }
    }
}
