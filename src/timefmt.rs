//! Timestamps as the API writes them: RFC 3339, UTC, milliseconds.

use time::OffsetDateTime;
use time::macros::format_description;

pub fn rfc3339(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .expect("every UTC date formats")
}

pub fn rfc3339_now() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

/// Unix seconds, as RFC 3339.
pub fn unix_rfc3339(secs: u64) -> String {
    rfc3339(OffsetDateTime::from_unix_timestamp(secs as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH))
}
