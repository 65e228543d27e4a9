//! Command line → [`SimConfig`]. Hand-written: every flag is `--name value` or
//! `--name=value`; [`usage`] lists them all.

use std::net::SocketAddr;
use std::time::Duration;

use crate::{SimConfig, Transport};

pub fn usage() -> &'static str {
    "gbsim — GB28181 device simulator for sipreg (loopback only)

usage: gbsim --server 127.0.0.1:PORT --duration SECS [options]

  --server ADDR:PORT          registrar to talk to; must be loopback (required)
  --duration SECS             length of the run (required; fractions allowed)
  --devices N                 simulated devices, one socket each (1)
  --id-prefix DIGITS          ids are prefix + zero-padded index, 20 digits (3402000000132)
  --first-index I             index of the first device (1)
  --password PASSWORD         digest password, the device id is the user name (secret)
  --realm REALM               expected digest realm (sipreg)
  --platform-id ID            platform id in the Request-URI sip:ID@server (34020000002000000001)
  --expires SECS              requested registration lifetime, refreshed at 80% (3600)
  --keepalive-interval SECS   seconds between keep-alive MESSAGEs (60)
  --channels M                channels in the catalog (16)
  --catalog-split S           catalog items per Response MESSAGE (8)
  --gb2312                    catalog bodies in GB2312 with Chinese channel names (通道N)
  --transport udp|tcp         (udp)
  --silent-after SECS         stop sending keep-alives after SECS (offline detection)
  --silent-devices N          with --silent-after: only the first N devices fall silent (all)
  --no-answer                 never answer queries (no 200, no Response)
  --ramp SECS                 spread device starts over SECS (0)
  --unregister                send REGISTER Expires: 0 at the end
  --json                      print the summary as one JSON object
  -h, --help                  this text
"
}

fn secs(flag: &str, v: &str) -> Result<Duration, String> {
    let s: f64 = v
        .parse()
        .map_err(|_| format!("{flag}: not a number of seconds: {v:?}"))?;
    if !(s.is_finite() && s >= 0.0) {
        return Err(format!("{flag}: must be a non-negative number of seconds"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: not a valid number: {v:?}"))
}

/// `Ok(None)` means help was asked for.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Option<SimConfig>, String> {
    let mut args = args.into_iter();
    let mut server: Option<SocketAddr> = None;
    let mut cfg = SimConfig::new("127.0.0.1:5060".parse().expect("literal"));
    let mut duration = None;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--server" => {
                let v = value()?;
                server = Some(v.parse().map_err(|_| {
                    format!("--server: expected IP:PORT (e.g. 127.0.0.1:5060), got {v:?}")
                })?)
            }
            "--duration" => duration = Some(secs("--duration", &value()?)?),
            "--devices" => cfg.devices = num("--devices", &value()?)?,
            "--id-prefix" => cfg.id_prefix = value()?,
            "--first-index" => cfg.first_index = num("--first-index", &value()?)?,
            "--password" => cfg.password = value()?,
            "--realm" => cfg.realm = value()?,
            "--platform-id" => cfg.platform_id = value()?,
            "--expires" => cfg.expires = num("--expires", &value()?)?,
            "--keepalive-interval" => {
                cfg.keepalive_interval = secs("--keepalive-interval", &value()?)?
            }
            "--channels" => cfg.channels = num("--channels", &value()?)?,
            "--catalog-split" => cfg.catalog_split = num("--catalog-split", &value()?)?,
            "--gb2312" => cfg.gb2312 = true,
            "--transport" => {
                cfg.transport = match value()?.to_ascii_lowercase().as_str() {
                    "udp" => Transport::Udp,
                    "tcp" => Transport::Tcp,
                    other => return Err(format!("--transport: udp or tcp, not {other:?}")),
                }
            }
            "--silent-after" => cfg.silent_after = Some(secs("--silent-after", &value()?)?),
            "--silent-devices" => cfg.silent_devices = Some(num("--silent-devices", &value()?)?),
            "--no-answer" => cfg.no_answer = true,
            "--ramp" => cfg.ramp = secs("--ramp", &value()?)?,
            "--unregister" => cfg.unregister = true,
            "--json" => cfg.json = true,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    cfg.server = server.ok_or("--server is required")?;
    let duration = duration.ok_or("--duration is required (every run is bounded)")?;
    if duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    cfg.duration = Some(duration);
    cfg.validate()?;
    Ok(Some(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Option<SimConfig>, String> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn parses_every_flag() {
        let c = p("--server 127.0.0.1:5070 --devices 5 --id-prefix 3402000000132 --password pw \
                   --realm r --expires 120 --keepalive-interval 2.5 --channels 3 --catalog-split=2 \
                   --gb2312 --transport tcp --duration 10 --silent-after 4 --no-answer --json \
                   --platform-id 34020000002000000009 --first-index 7 --silent-devices 2 --ramp 1 --unregister")
        .unwrap()
        .unwrap();
        assert_eq!(c.server, "127.0.0.1:5070".parse().unwrap());
        assert_eq!(c.devices, 5);
        assert_eq!(c.password, "pw");
        assert_eq!(c.realm, "r");
        assert_eq!(c.expires, 120);
        assert_eq!(c.keepalive_interval, Duration::from_millis(2500));
        assert_eq!((c.channels, c.catalog_split), (3, 2));
        assert!(c.gb2312 && c.no_answer && c.json && c.unregister);
        assert_eq!(c.transport, Transport::Tcp);
        assert_eq!(c.duration, Some(Duration::from_secs(10)));
        assert_eq!(c.silent_after, Some(Duration::from_secs(4)));
        assert_eq!(c.silent_devices, Some(2));
        assert_eq!(c.device_id(0).unwrap(), "34020000001320000007");
    }

    #[test]
    fn refuses_bad_input() {
        assert!(p("--server 10.0.0.1:5060 --duration 1")
            .unwrap_err()
            .contains("non-loopback"));
        assert!(p("--server 127.0.0.1:5060")
            .unwrap_err()
            .contains("--duration"));
        assert!(p("--duration 1").unwrap_err().contains("--server"));
        assert!(p("--server 127.0.0.1:5060 --duration 1 --transport sctp").is_err());
        assert!(
            p("--server 127.0.0.1:5060 --duration 1 --id-prefix 34020000001320000001").is_err()
        );
        assert!(p("--server 127.0.0.1:5060 --duration 1 --bogus").is_err());
        assert!(p("--help").unwrap().is_none());
        assert!(p("--server [::1]:5060 --duration 1").unwrap().is_some());
    }
}
