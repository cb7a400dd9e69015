//! Time zones for quota tests that must not see a period end while they run.

use std::time::{SystemTime, UNIX_EPOCH};
use vantage_model::{Calendar, QuotaPeriod};

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A time zone whose current `period` has at least `margin_s` seconds left and began at
/// least `margin_s` seconds ago: a test that counts within one period uses it, so it never
/// straddles a boundary. (Zones 25 hours apart cannot both be near a day's or a month's
/// boundary; for hours, zones half an hour apart.)
pub fn steady_zone(period: QuotaPeriod, margin_s: i64) -> &'static str {
    let now = unix_now();
    [
        "UTC",
        "Pacific/Kiritimati",
        "Pacific/Pago_Pago",
        "Asia/Kolkata",
        "Asia/Kathmandu",
    ]
    .into_iter()
    .find(|zone| {
        let w = Calendar::new(zone)
            .expect("a known zone")
            .window(period, now);
        w.end - now >= margin_s && now - w.start >= margin_s
    })
    .expect("some zone is far from its period's boundary")
}
