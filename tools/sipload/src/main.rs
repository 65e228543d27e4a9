//! `sipload` binary: parse the command line, then run the load test or the
//! bare responder.

use std::process::ExitCode;
use std::time::Instant;

use sipload::{cli, engine, mmsg, responder};

fn main() -> ExitCode {
    let cfg = match cli::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            let text = e.to_string();
            if text == cli::usage() {
                print!("{text}");
                return ExitCode::SUCCESS;
            }
            eprintln!("sipload: {text}");
            return ExitCode::from(2);
        }
    };
    let stop = mmsg::stop_flag_on_signals();

    if let Some(listen) = cfg.responder {
        let sock = match responder::bind(listen) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sipload: {e}");
                return ExitCode::FAILURE;
            }
        };
        let local = sock.local_addr().map(|a| a.to_string()).unwrap_or_default();
        // The first stdout line is the contract scripts wait for.
        println!("sipload responder listening on {local}");
        let until = cfg.duration_explicit.then(|| Instant::now() + cfg.duration);
        return match responder::serve(&sock, cfg.mmsg, stop, until) {
            Ok(st) => {
                eprintln!(
                    "sipload responder: {} requests, {} responses, {} dropped, {} send errors, {:.3} s CPU",
                    st.requests,
                    st.responses,
                    st.dropped,
                    st.send_errors,
                    mmsg::process_cpu_seconds()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sipload responder: {e}");
                ExitCode::FAILURE
            }
        };
    }

    match engine::run(&cfg, stop) {
        Ok(report) => {
            if cfg.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sipload: {e}");
            ExitCode::FAILURE
        }
    }
}
