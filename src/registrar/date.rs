//! The `Date` header (RFC 3261 §20.17, RFC 1123 form in GMT), written without
//! allocating. Devices use it for clock sync.

/// Civil (year, month, day) from days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, valid for the proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn push2(out: &mut Vec<u8>, n: u32) {
    out.push(b'0' + (n / 10 % 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

/// Appends e.g. `Sun, 22 Nov 2026 05:40:00 GMT` for `unix_secs`.
pub fn push_rfc1123(out: &mut Vec<u8>, unix_secs: u64) {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = (unix_secs / 86_400) as i64;
    let secs = (unix_secs % 86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    out.extend_from_slice(DAYS[(days % 7) as usize]);
    out.extend_from_slice(b", ");
    push2(out, day);
    out.push(b' ');
    out.extend_from_slice(MONTHS[(month - 1) as usize]);
    out.push(b' ');
    crate::sip::bytes::push_u64(out, year.max(0) as u64);
    out.push(b' ');
    push2(out, secs / 3600);
    out.push(b':');
    push2(out, secs / 60 % 60);
    out.push(b':');
    push2(out, secs % 60);
    out.extend_from_slice(b" GMT");
}

/// Appends the GB28181 `Date` form, `yyyy-MM-ddTHH:mm:ss.SSS` in the server's
/// local time (GB/T 28181-2016 §9.10: devices set their clocks from it).
pub fn push_gb28181(out: &mut Vec<u8>, unix_secs: u64, millis: u16) {
    let local = unix_secs as i64 + utc_offset_secs(unix_secs);
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    crate::sip::bytes::push_u64(out, year.max(0) as u64);
    out.push(b'-');
    push2(out, month);
    out.push(b'-');
    push2(out, day);
    out.push(b'T');
    push2(out, secs / 3600);
    out.push(b':');
    push2(out, secs / 60 % 60);
    out.push(b':');
    push2(out, secs % 60);
    out.push(b'.');
    let ms = u32::from(millis.min(999));
    out.push(b'0' + (ms / 100) as u8);
    push2(out, ms % 100);
}

/// The local time zone's offset from UTC at `unix_secs` (honours TZ).
fn utc_offset_secs(unix_secs: u64) -> i64 {
    let t = unix_secs as libc::time_t;
    // SAFETY: `tm` is a plain C struct for which all-zero bytes are valid, and
    // localtime_r writes only into it, reading `t`; both outlive the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to `t` and `tm`, as above; localtime_r is the
    // thread-safe variant.
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if ok {
        tm.tm_gmtoff
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(secs: u64) -> String {
        let mut v = Vec::new();
        push_rfc1123(&mut v, secs);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn gb28181_form() {
        let mut v = Vec::new();
        push_gb28181(
            &mut v,
            (784_111_777 - utc_offset_secs(784_111_777)) as u64,
            7,
        );
        assert_eq!(String::from_utf8(v).unwrap(), "1994-11-06T08:49:37.007");
    }

    #[test]
    fn known_dates() {
        assert_eq!(fmt(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        // RFC 1123's own example.
        assert_eq!(fmt(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(fmt(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(fmt(1_795_305_599), "Sat, 21 Nov 2026 23:59:59 GMT");
        assert_eq!(fmt(4_102_444_800), "Fri, 01 Jan 2100 00:00:00 GMT");
    }
}
