//! The calendar of quotas against a real (private) Redis, with the clock injected: the
//! counters the proxies charge start again at the period's boundary in the plan's zone.

use fred::interfaces::ClientLike;
use std::sync::Arc;
use vantage_model::{Config, QuotaSubject, RedisSettings};
use vantage_proxy::limits::plan;
use vantage_proxy::limits::quota::{Charge, QuotaCounter};
use vantage_proxy::limits::redis::RedisLimiter;
use vantage_testkit::*;

fn unix(s: &str) -> i64 {
    humantime::parse_rfc3339(s)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn a_monthly_quota_in_berlin_resets_at_local_midnight_on_the_first() {
    let redis = Redis::start();
    let cfg = Config::from_yaml(
        r#"
tenants: [{id: t, name: T, subdomain: t}]
plans:
  - {id: p, tenant_id: t, name: pro, time_zone: Europe/Berlin,
     quotas: [{name: monthly, limit: 2, period: month}, {name: daily, limit: 100, period: day, overage: allow}]}
"#,
    )
    .unwrap();
    cfg.validate().unwrap();
    let plans = plan::compile(&cfg);
    let pro = plans["p"].clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let limiter = RedisLimiter::new(&RedisSettings {
            url: redis.url(),
            key_prefix: "cal".into(),
            timeout_ms: 500,
        })
        .unwrap();
        limiter.client().init().await.expect("connect to redis");
        let counter = QuotaCounter::new(Some(Arc::new(limiter)));
        let quotas: Vec<_> = pro.quotas.iter().collect();
        let key = QuotaSubject::Key("k".into());
        let charge = |now: i64| {
            let (counter, pro, quotas, key) = (&counter, &pro, &quotas, &key);
            async move { counter.charge("t", pro, key, quotas, 1, now).await }
        };
        // 31 January (of a year far enough ahead that the counters' expiry is in the future),
        // 23:59:58 and :59 in Berlin (22:59 UTC): the monthly quota's two.
        let last_second = unix("2099-01-31T22:59:59Z");
        for now in [last_second - 1, last_second] {
            match charge(now).await {
                Charge::Counted(d) => assert!(!d[0].over && d[0].window.end == last_second + 1),
                _ => panic!("refused before the limit"),
            }
        }
        match charge(last_second).await {
            Charge::Refused(d, 0) => {
                assert_eq!(d[0].used, 2);
                assert_eq!(d[0].window.seconds_left(last_second), 1);
            }
            _ => panic!("the third request of January was not refused by the monthly quota"),
        }
        // One second later it is February in Berlin (still January in UTC): counted anew,
        // the day's quota too.
        match charge(last_second + 1).await {
            Charge::Counted(d) => {
                assert_eq!((d[0].used, d[1].used), (1, 1));
                assert_eq!(d[0].window.end, unix("2099-02-28T23:00:00Z"));
            }
            _ => panic!("February's first request was refused"),
        }
    });
    // January's counters and February's are different keys, each expiring after its period.
    let keys = redis.cli(&["--scan", "--pattern", "cal:q:*"]);
    let mut keys: Vec<&str> = keys.lines().collect();
    keys.sort();
    let jan = unix("2098-12-31T23:00:00Z");
    let feb = unix("2099-01-31T23:00:00Z");
    let expected = [
        format!(
            "cal:q:{{t\u{1f}key:k}}:p\u{1f}daily:{}",
            unix("2099-01-30T23:00:00Z")
        ),
        format!("cal:q:{{t\u{1f}key:k}}:p\u{1f}daily:{feb}"),
        format!("cal:q:{{t\u{1f}key:k}}:p\u{1f}monthly:{jan}"),
        format!("cal:q:{{t\u{1f}key:k}}:p\u{1f}monthly:{feb}"),
    ];
    assert_eq!(
        keys,
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(redis.cli(&["GET", &expected[2]]).trim(), "2");
    assert_eq!(redis.cli(&["GET", &expected[3]]).trim(), "1");
}
