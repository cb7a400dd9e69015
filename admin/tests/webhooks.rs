//! Signed webhooks end to end: a real `vantage-admin serve` (endpoints, test events, the
//! delivery log, replays), real `vantage-admin worker` processes delivering to a receiver
//! on loopback, and real Postgres.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use vantage_testkit::*;

/// Admin settings that let endpoints point at loopback receivers.
const ALLOW_LOOPBACK: &str = "worker:\n  webhook_allowed_networks: [\"127.0.0.0/8\"]\n";

/// Worker lines: quick retries, loopback allowed, and a lease long enough that a busy
/// machine's late heartbeat never lets the job be claimed again mid-attempt (which would
/// send it twice and break the exact request counts below).
const QUICK_WORKER: &str = "  lease_s: 30
  webhook_timeout_ms: 5000
  webhook_retry_delays_s: [0.2, 0.2, 0.2, 0.2]
  webhook_allowed_networks: [\"127.0.0.0/8\"]
";

/// As [`QUICK_WORKER`] with a short lease: the job of a worker SIGKILLed mid-attempt is
/// claimed again 2 s later.
const SHORT_LEASE_WORKER: &str = "  lease_s: 2
  webhook_timeout_ms: 5000
  webhook_retry_delays_s: [0.2, 0.2, 0.2, 0.2]
  webhook_allowed_networks: [\"127.0.0.0/8\"]
";

/// An admin (no Redis: webhooks need none) whose endpoints may point at loopback, and a
/// tenant.
fn admin_and_tenant() -> (Admin, String) {
    let admin = AdminSetup::fresh()
        .without_redis()
        .settings(ALLOW_LOOPBACK)
        .start();
    let tenant = id(&admin.create("/api/v1/tenants", bodies::tenant("acme")));
    (admin, tenant)
}

/// Create an endpoint as `token`; returns (id, secret).
fn endpoint(admin: &Admin, token: &str, body: Value) -> (String, String) {
    let r = admin.call(token, "POST", "/api/v1/webhooks", Some(body));
    assert_eq!(r.status, 201, "{}", r.body);
    let secret = r.body["secret"].as_str().expect("a secret").to_string();
    (id(&r.body), secret)
}

/// Send a `webhook.test` event to endpoint `ep`; returns (event id, delivery id).
fn test_event(admin: &Admin, token: &str, ep: &str) -> (String, String) {
    let r = admin.call(token, "POST", &format!("/api/v1/webhooks/{ep}/test"), None);
    assert_eq!(r.status, 202, "{}", r.body);
    (
        r.body["event_id"].as_str().unwrap().to_string(),
        r.body["delivery_id"].as_str().unwrap().to_string(),
    )
}

/// The delivery (with its event and attempt log) once it is in `state`.
fn delivery_in(admin: &Admin, delivery: &str, state: &str, secs: u64) -> Value {
    let path = format!("/api/v1/webhook-deliveries/{delivery}");
    wait_for(&format!("delivery {delivery} to be {state}"), secs, || {
        let r = admin.root("GET", &path, None);
        assert_eq!(r.status, 200, "{}", r.body);
        (r.body["state"] == state).then_some(r.body)
    })
}

/// The statuses of the attempt log (`None`: no answer).
fn statuses(delivery: &Value) -> Vec<Option<i64>> {
    delivery["attempt_log"]
        .as_array()
        .expect("attempt_log")
        .iter()
        .map(|a| a["status"].as_i64())
        .collect()
}

/// The states of the `webhook.deliver` jobs of `delivery`, oldest first.
fn job_states(db: &Database, delivery: &str) -> Vec<String> {
    db.sql(&format!(
        "SELECT string_agg(state, ',' ORDER BY id) FROM jobs
          WHERE kind = 'webhook.deliver' AND payload->>'delivery_id' = '{delivery}'"
    ))
    .split(',')
    .filter(|s| !s.is_empty())
    .map(String::from)
    .collect()
}

/// Verification as `docs/webhooks.md` tells a receiver to do it: the key is the base64
/// after `whsec_`; the signature is base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`; the
/// header lists `v1,<signature>` entries separated by spaces.
fn verify(secret: &str, id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let key = B64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = B64.encode(mac.finalize().into_bytes());
    header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|sig| sig == expected)
}

fn verify_request(secret: &str, r: &Received) -> bool {
    verify(
        secret,
        r.header("webhook-id").expect("webhook-id"),
        r.header("webhook-timestamp").expect("webhook-timestamp"),
        &r.body,
        r.header("webhook-signature").expect("webhook-signature"),
    )
}

#[test]
fn a_receiver_that_fails_three_times_gets_the_event_once_more() {
    let (admin, tenant) = admin_and_tenant();
    let receiver = Receiver::scripted(
        [Reply::Status(500), Reply::Status(500), Reply::Status(500)],
        Reply::Status(200),
    );
    let (ep, secret) = endpoint(
        &admin,
        &admin.root,
        json!({"tenant_id": tenant, "url": receiver.url("/hook"), "description": "flaky"}),
    );
    let worker = Worker::start(&admin.db, QUICK_WORKER, "");
    let (event, delivery) = test_event(&admin, &admin.root, &ep);

    let d = delivery_in(&admin, &delivery, "delivered", 20);
    // Delivered: no attempt is to come, so these are all the requests there will be.
    let got = receiver.requests();
    assert_eq!(got.len(), 4, "{got:?}");
    for r in &got {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/hook");
        assert_eq!(
            r.header("webhook-id"),
            Some(event.as_str()),
            "same id on every attempt"
        );
        assert!(verify_request(&secret, r), "attempt {} is signed", r.index);
        assert_eq!(r.body, got[0].body, "the same event each time");
    }
    let answered: Vec<Option<u16>> = got.iter().map(|r| r.answered).collect();
    assert_eq!(answered, [Some(500), Some(500), Some(500), Some(200)]);

    // The delivery log: four attempts, 500, 500, 500, 200.
    assert_eq!(d["attempts"], 4);
    assert_eq!(d["last_status"], 200);
    assert!(d["last_error"].is_null(), "{d}");
    assert!(d["delivered_at"].is_string(), "{d}");
    assert_eq!(d["event_type"], "webhook.test");
    assert_eq!(d["event_id"], event.as_str());
    assert_eq!(d["event"]["type"], "webhook.test");
    assert_eq!(statuses(&d), [Some(500), Some(500), Some(500), Some(200)]);
    let log = d["attempt_log"].as_array().unwrap();
    for (i, a) in log.iter().enumerate() {
        assert_eq!(a["attempt"], i as i64 + 1);
        assert!(a["latency_ms"].as_i64().is_some_and(|l| l >= 0), "{a}");
    }
    for a in &log[..3] {
        assert!(
            a["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("HTTP 500")),
            "{a}"
        );
    }
    assert!(log[3]["error"].is_null());

    // The endpoint's delivery log lists it, filtered by state.
    let list = admin.root("GET", &format!("/api/v1/webhooks/{ep}/deliveries"), None);
    assert_eq!(list.status, 200, "{}", list.body);
    let items = list.body.as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], delivery.as_str());
    assert_eq!(items[0]["state"], "delivered");
    assert_eq!(items[0]["attempts"], 4);
    assert_eq!(items[0]["last_status"], 200);
    assert!(items[0]["last_latency_ms"].as_i64().is_some());
    let failed = admin.root(
        "GET",
        &format!("/api/v1/webhooks/{ep}/deliveries?state=failed"),
        None,
    );
    assert_eq!(failed.body, json!([]));
    let bad = admin.root(
        "GET",
        &format!("/api/v1/webhooks/{ep}/deliveries?state=lost"),
        None,
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.fields(), ["state"]);

    assert_eq!(job_states(&admin.db, &delivery), ["done"]);
    let metrics = worker.metrics_text();
    assert!(
        metrics.contains("vantage_webhook_deliveries_total{result=\"failed\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vantage_webhook_deliveries_total{result=\"delivered\"} 1"),
        "{metrics}"
    );
}

#[test]
fn the_receiver_verifies_the_documented_signature() {
    let (admin, tenant) = admin_and_tenant();
    let token = admin.token_for(&tenant);
    let receiver = Receiver::start();
    let (ep, secret) = endpoint(
        &admin,
        &token,
        json!({"url": receiver.url("/in"), "events": ["alert.fired", "key.created"]}),
    );
    assert!(secret.starts_with("whsec_"));
    assert_eq!(B64.decode(&secret[6..]).unwrap().len(), 32);
    let _worker = Worker::start(&admin.db, QUICK_WORKER, "");
    let (event, delivery) = test_event(&admin, &token, &ep);
    let got = receiver.wait_for_requests(1, 20);
    let r = &got[0];

    assert_eq!(r.header("webhook-id"), Some(event.as_str()));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(
        r.header("user-agent")
            .is_some_and(|u| u.contains("VantageEdge")),
        "{:?}",
        r.headers
    );
    let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
    assert!((ts - unix_now()).abs() < 60, "{ts}");
    let body = r.json();
    assert_eq!(body["type"], "webhook.test");
    assert_eq!(body["data"]["endpoint_id"], ep.as_str());
    let stamp = body["timestamp"].as_str().unwrap();
    assert!(
        stamp.len() == 24 && stamp.ends_with('Z') && &stamp[10..11] == "T",
        "RFC 3339: {stamp}"
    );

    // The documented scheme verifies it; any change to id, timestamp or body breaks it.
    assert!(verify_request(&secret, r));
    let sig = r.header("webhook-signature").unwrap();
    let id = r.header("webhook-id").unwrap();
    let stamp = r.header("webhook-timestamp").unwrap();
    let mut tampered = r.body.clone();
    let at = tampered.iter().position(|b| *b == b'T').unwrap();
    tampered[at] = b't';
    assert!(!verify(&secret, id, stamp, &tampered, sig));
    assert!(!verify(&secret, id, &(ts + 1).to_string(), &r.body, sig));
    assert!(!verify(&secret, &delivery, stamp, &r.body, sig));

    // The secret is never shown again.
    let one = admin.call(&token, "GET", &format!("/api/v1/webhooks/{ep}"), None);
    assert_eq!(one.status, 200);
    assert!(one.body.get("secret").is_none(), "{}", one.body);
    assert!(!one.response.text().contains(&secret[6..]));
    assert_eq!(one.body["events"], json!(["alert.fired", "key.created"]));
    let all = admin.call(&token, "GET", "/api/v1/webhooks", None);
    assert!(!all.response.text().contains(&secret[6..]), "{}", all.body);

    // After a rotation, deliveries are signed with the new secret only.
    let rotated = admin.call(
        &token,
        "POST",
        &format!("/api/v1/webhooks/{ep}/rotate-secret"),
        None,
    );
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new_secret = rotated.body["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    let (second, _) = test_event(&admin, &token, &ep);
    let got = receiver.wait_for_requests(2, 20);
    assert_eq!(got[1].header("webhook-id"), Some(second.as_str()));
    assert!(verify_request(&new_secret, &got[1]));
    assert!(!verify_request(&secret, &got[1]));
}

#[test]
fn endpoints_to_internal_addresses_are_refused() {
    // No allow-list: loopback is as forbidden as any other internal address.
    let admin = AdminSetup::fresh().without_redis().start();
    let tenant = id(&admin.create("/api/v1/tenants", bodies::tenant("acme")));
    for url in [
        "http://10.0.0.1/",
        "http://169.254.169.254/latest",
        "http://[::1]:8080/",
        "http://localhost/",
        "http://127.0.0.1:9/",
        "http://2130706433/",
        "http://192.168.1.20/hook",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://224.0.0.1/",
        "ftp://93.184.216.34/",
        "http://user:pw@93.184.216.34/",
        "not a url",
    ] {
        let r = admin.root(
            "POST",
            "/api/v1/webhooks",
            Some(json!({"tenant_id": tenant, "url": url})),
        );
        assert_eq!(r.status, 422, "{url}: {}", r.body);
        assert_eq!(r.code(), "validation_failed");
        assert_eq!(r.fields(), ["url"], "{url}: {}", r.body);
    }
    let r = admin.root(
        "POST",
        "/api/v1/webhooks",
        Some(json!({"tenant_id": tenant, "url": "http://169.254.169.254/"})),
    );
    let message = r.body["error"]["fields"][0]["message"].as_str().unwrap();
    assert!(message.contains("link-local"), "{message}");
    // Every problem at once: the URL, unknown event types, the format.
    let r = admin.root(
        "POST",
        "/api/v1/webhooks",
        Some(json!({"tenant_id": tenant, "url": "http://10.1.2.3/",
                    "events": ["alert.fired", "alert.fried"], "format": "teams"})),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.fields(), ["url", "events[1]", "format"]);
    // Nothing was written.
    let list = admin.root("GET", "/api/v1/webhooks", None);
    assert_eq!(list.body["items"], json!([]), "{}", list.body);
    assert_eq!(admin.db.sql("SELECT count(*) FROM webhook_endpoints"), "0");
}

#[test]
fn a_worker_without_the_allow_list_refuses_loopback_at_delivery() {
    // The admin admits loopback; this worker does not.
    let (admin, tenant) = admin_and_tenant();
    let receiver = Receiver::start();
    let (ep, _) = endpoint(
        &admin,
        &admin.root,
        json!({"tenant_id": tenant, "url": receiver.url("/hook")}),
    );
    let _worker = Worker::start(
        &admin.db,
        "  lease_s: 30\n  webhook_retry_delays_s: [0.2, 0.2]\n",
        "",
    );
    let (_, delivery) = test_event(&admin, &admin.root, &ep);
    let d = delivery_in(&admin, &delivery, "failed", 20);
    let error = d["last_error"].as_str().unwrap();
    assert!(
        error.contains("127.0.0.1 is a loopback address")
            && error.contains("webhook_allowed_networks"),
        "{error}"
    );
    // Refused at once, not retried: one attempt, no answer, a dead job.
    assert_eq!(d["attempts"], 1);
    assert_eq!(statuses(&d), [None]);
    assert!(d["last_status"].is_null());
    assert_eq!(job_states(&admin.db, &delivery), ["dead"]);
    // The job is dead and nothing is queued: the receiver never hears of it.
    assert_eq!(receiver.count(), 0);
}

#[test]
fn sigkill_mid_delivery_delivers_once_after_restart() {
    let (admin, tenant) = admin_and_tenant();
    // The first request is held unanswered; later ones are answered 200.
    let receiver = Receiver::scripted([Reply::Hold], Reply::Status(200));
    let (ep, secret) = endpoint(
        &admin,
        &admin.root,
        json!({"tenant_id": tenant, "url": receiver.url("/hook")}),
    );
    // Only this worker runs, and only until its first request arrives: its short lease
    // (which lets the next worker take the job over soon after the kill) cannot run out
    // unnoticed while it works.
    let mut worker = Worker::start(&admin.db, SHORT_LEASE_WORKER, "");
    let (event, delivery) = test_event(&admin, &admin.root, &ep);
    receiver.wait_for_requests(1, 20);
    worker.kill();
    receiver.wait_until("the killed worker's connection to close", 10, |r| {
        r[0].client_gone
    });
    // The next worker claims the job once the dead one's 2 s lease is over, and holds it
    // with a long lease of its own.
    drop(worker);
    let _worker = Worker::start(&admin.db, QUICK_WORKER, "");
    let d = delivery_in(&admin, &delivery, "delivered", 20);

    // A later event is delivered too: the worker has moved on.
    let (later, later_delivery) = test_event(&admin, &admin.root, &ep);
    delivery_in(&admin, &later_delivery, "delivered", 20);
    assert!(job_states(&admin.db, &delivery).iter().all(|s| s == "done"));

    let got = receiver.requests();
    let first: Vec<&Received> = got
        .iter()
        .filter(|r| r.header("webhook-id") == Some(event.as_str()))
        .collect();
    assert_eq!(first.len(), 2, "{got:?}");
    assert!(first[0].client_gone && first[0].answered.is_none());
    let ok: Vec<_> = first
        .iter()
        .filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s)))
        .collect();
    assert_eq!(ok.len(), 1, "answered 2xx exactly once: {first:?}");
    assert!(verify_request(&secret, ok[0]));
    assert_eq!(
        got.iter()
            .filter(|r| r.header("webhook-id") == Some(later.as_str()))
            .count(),
        1
    );
    assert_eq!(got.len(), 3, "{got:?}");

    // The log shows the attempt the crash cut short, then the one that delivered.
    assert_eq!(d["attempts"], 2);
    assert_eq!(statuses(&d), [None, Some(200)]);
    let cut = d["attempt_log"][0]["error"].as_str().unwrap();
    assert!(cut.contains("worker stopped"), "{cut}");
}

#[test]
fn used_up_retries_dead_letter_and_replay_delivers() {
    let (admin, tenant) = admin_and_tenant();
    let token = admin.token_for(&tenant);
    let receiver = Receiver::scripted(
        [Reply::Status(500), Reply::Status(503), Reply::Status(500)],
        Reply::Status(200),
    );
    let (ep, secret) = endpoint(&admin, &token, json!({"url": receiver.url("/hook")}));
    // Before any worker runs the delivery is pending: a replay is refused.
    let (event, delivery) = test_event(&admin, &token, &ep);
    let replay = format!("/api/v1/webhook-deliveries/{delivery}/replay");
    let r = admin.call(&token, "POST", &replay, None);
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(job_states(&admin.db, &delivery), ["queued"]);

    // Two retries: three attempts, then a dead letter.
    let worker = Worker::start(
        &admin.db,
        "  lease_s: 30\n  webhook_retry_delays_s: [0.2, 0.2]\n  webhook_allowed_networks: [\"127.0.0.0/8\"]\n",
        "",
    );
    let d = delivery_in(&admin, &delivery, "failed", 20);
    assert_eq!(statuses(&d), [Some(500), Some(503), Some(500)]);
    assert_eq!(d["attempts"], 3);
    assert!(d["last_error"].as_str().unwrap().starts_with("HTTP 500"));
    assert!(d["next_attempt_at"].is_null(), "{d}");
    assert_eq!(job_states(&admin.db, &delivery), ["dead"]);
    assert_eq!(receiver.count(), 3);
    let failed = admin.call(
        &token,
        "GET",
        &format!("/api/v1/webhooks/{ep}/deliveries?state=failed"),
        None,
    );
    assert_eq!(failed.body.as_array().unwrap().len(), 1, "{}", failed.body);
    assert!(worker
        .metrics_text()
        .contains("vantage_webhook_deliveries_total{result=\"dead\"} 1"));

    // The dead job is a dead letter of the job queue too.
    let dead = admin.call(
        &token,
        "GET",
        "/api/v1/jobs?state=dead&kind=webhook.deliver",
        None,
    );
    assert_eq!(dead.status, 200, "{}", dead.body);
    let dead = dead.body["jobs"].as_array().unwrap().clone();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["payload"]["delivery_id"], delivery.as_str());
    let old_job = dead[0]["id"].as_i64().unwrap();

    // Replay: pending again, then delivered, with the same webhook-id. The new job takes the
    // dead one's place: that one is no longer a dead letter.
    let r = admin.call(&token, "POST", &replay, None);
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["id"], delivery.as_str());
    let old = admin.call(&token, "GET", &format!("/api/v1/jobs/{old_job}"), None);
    assert_eq!(old.body["state"], "done", "{}", old.body);
    assert_eq!(
        old.body["last_error"], "superseded by a replay of its delivery",
        "{}",
        old.body
    );
    let r = admin.call(
        &token,
        "GET",
        "/api/v1/jobs?state=dead&kind=webhook.deliver",
        None,
    );
    assert_eq!(r.body["jobs"], json!([]), "{}", r.body);
    // ... and so not replayable on its own any more.
    let r = admin.call(
        &token,
        "POST",
        &format!("/api/v1/jobs/{old_job}/replay"),
        None,
    );
    assert_eq!(r.status, 409, "{}", r.body);
    let d = delivery_in(&admin, &delivery, "delivered", 20);
    assert_eq!(statuses(&d), [Some(500), Some(503), Some(500), Some(200)]);
    assert_eq!(d["attempts"], 4);
    let got = receiver.requests();
    assert_eq!(got.len(), 4);
    assert!(got
        .iter()
        .all(|r| r.header("webhook-id") == Some(event.as_str())));
    assert!(verify_request(&secret, &got[3]));
    assert_eq!(job_states(&admin.db, &delivery), ["done", "done"]);
    assert_eq!(
        admin
            .db
            .sql("SELECT count(*) FROM jobs WHERE state = 'dead'"),
        "0"
    );
    // An unknown delivery is 404.
    let r = admin.call(
        &token,
        "POST",
        "/api/v1/webhook-deliveries/00000000-0000-4000-8000-000000000000/replay",
        None,
    );
    assert_eq!(r.status, 404, "{}", r.body);
}

#[test]
fn replaying_the_dead_job_of_a_delivery_delivers_it() {
    let (admin, tenant) = admin_and_tenant();
    let token = admin.token_for(&tenant);
    let receiver = Receiver::scripted(
        [Reply::Status(500), Reply::Status(502), Reply::Status(503)],
        Reply::Status(200),
    );
    let (ep, _) = endpoint(&admin, &token, json!({"url": receiver.url("/hook")}));
    // One retry: two attempts, then a dead letter.
    let _worker = Worker::start(
        &admin.db,
        "  lease_s: 30\n  webhook_retry_delays_s: [0.2]\n  webhook_allowed_networks: [\"127.0.0.0/8\"]\n",
        "",
    );
    let (event, delivery) = test_event(&admin, &token, &ep);
    let d = delivery_in(&admin, &delivery, "failed", 20);
    assert_eq!(statuses(&d), [Some(500), Some(502)]);
    let dead = admin.call(&token, "GET", "/api/v1/jobs?state=dead", None);
    let dead = dead.body["jobs"].as_array().unwrap().clone();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["payload"]["delivery_id"], delivery.as_str());
    let job = dead[0]["id"].as_i64().unwrap();

    // Replaying the job replays its delivery: pending again in the same write, and a fresh
    // retry schedule (attempt 3 fails, and is retried once more: it is the job's first).
    let r = admin.call(&token, "POST", &format!("/api/v1/jobs/{job}/replay"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["id"], job);
    assert_eq!(r.body["attempts"], 0);
    let d = delivery_in(&admin, &delivery, "delivered", 20);
    assert_eq!(statuses(&d), [Some(500), Some(502), Some(503), Some(200)]);
    assert_eq!(d["attempts"], 4);
    let got = receiver.requests();
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got
        .iter()
        .all(|r| r.header("webhook-id") == Some(event.as_str())));
    // The same job did it; it is done, and not replayable again.
    assert_eq!(job_states(&admin.db, &delivery), ["done"]);
    let r = admin.call(&token, "POST", &format!("/api/v1/jobs/{job}/replay"), None);
    assert_eq!(r.status, 409, "{}", r.body);
}

#[test]
fn tenants_see_only_their_own_webhooks() {
    let (admin, a) = admin_and_tenant();
    let b = id(&admin.create("/api/v1/tenants", bodies::tenant("bravo")));
    let (token_a, token_b) = (admin.token_for(&a), admin.token_for(&b));
    let receiver = Receiver::start();
    let (ep, _) = endpoint(&admin, &token_a, json!({"url": receiver.url("/a")}));
    // No worker: the delivery stays pending.
    let (_, delivery) = test_event(&admin, &token_a, &ep);

    for (method, path, body) in [
        ("GET", format!("/api/v1/webhooks/{ep}"), None),
        (
            "PATCH",
            format!("/api/v1/webhooks/{ep}"),
            Some(json!({"enabled": false})),
        ),
        ("DELETE", format!("/api/v1/webhooks/{ep}"), None),
        ("POST", format!("/api/v1/webhooks/{ep}/rotate-secret"), None),
        ("POST", format!("/api/v1/webhooks/{ep}/test"), None),
        ("GET", format!("/api/v1/webhooks/{ep}/deliveries"), None),
        (
            "GET",
            format!("/api/v1/webhook-deliveries/{delivery}"),
            None,
        ),
        (
            "POST",
            format!("/api/v1/webhook-deliveries/{delivery}/replay"),
            None,
        ),
    ] {
        let r = admin.call(&token_b, method, &path, body);
        assert_eq!(r.status, 404, "{method} {path}: {}", r.body);
        assert_eq!(r.code(), "not_found");
    }
    // B lists nothing, may not list A's, and may not create for A.
    let r = admin.call(&token_b, "GET", "/api/v1/webhooks", None);
    assert_eq!(r.body["items"], json!([]));
    let r = admin.call(
        &token_b,
        "GET",
        &format!("/api/v1/webhooks?tenant_id={a}"),
        None,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = admin.call(
        &token_b,
        "POST",
        "/api/v1/webhooks",
        Some(json!({"tenant_id": a, "url": receiver.url("/b")})),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.fields(), ["tenant_id"]);

    // Nothing of A's changed; A (and the superadmin) still see it all.
    let r = admin.call(&token_a, "GET", &format!("/api/v1/webhooks/{ep}"), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body["enabled"], true);
    let r = admin.call(&token_a, "GET", "/api/v1/webhooks", None);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    let r = admin.root("GET", &format!("/api/v1/webhooks?tenant_id={b}"), None);
    assert_eq!(r.body["items"], json!([]));
    let r = admin.call(
        &token_a,
        "GET",
        &format!("/api/v1/webhook-deliveries/{delivery}"),
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body["state"], "pending");
    assert_eq!(r.body["attempts"], 0);
    assert_eq!(admin.db.sql("SELECT count(*) FROM webhook_endpoints"), "1");
}

#[test]
fn a_slack_endpoint_gets_one_signed_line() {
    let (admin, tenant) = admin_and_tenant();
    let receiver = Receiver::start();
    let (ep, secret) = endpoint(
        &admin,
        &admin.root,
        json!({"tenant_id": tenant, "url": receiver.url("/services/T0/B0/x"), "format": "slack"}),
    );
    let _worker = Worker::start(&admin.db, QUICK_WORKER, "");
    let (event, delivery) = test_event(&admin, &admin.root, &ep);
    delivery_in(&admin, &delivery, "delivered", 20);
    let got = receiver.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/services/T0/B0/x");
    assert_eq!(
        got[0].json(),
        json!({"text": "VantageEdge webhook.test: This is a test event from VantageEdge."})
    );
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    assert_eq!(got[0].header("webhook-id"), Some(event.as_str()));
    assert!(verify_request(&secret, &got[0]));
}

#[test]
fn timeouts_and_redirects_are_failed_attempts() {
    let (admin, tenant) = admin_and_tenant();
    let receiver = Receiver::scripted(
        [
            Reply::Hold,
            Reply::Redirect("http://127.0.0.1:9/elsewhere".into()),
            Reply::Close,
        ],
        Reply::Status(204),
    );
    // The path of a URL can be its secret (a Slack incoming webhook's is): it must not
    // show in any error the worker records or logs.
    let secret_path = "/services/T0/B0/s3cretPathToken";
    let (ep, _) = endpoint(
        &admin,
        &admin.root,
        json!({"tenant_id": tenant, "url": receiver.url(secret_path)}),
    );
    let worker = Worker::start(
        &admin.db,
        "  lease_s: 30\n  webhook_timeout_ms: 1000\n  webhook_retry_delays_s: [0.2, 0.2, 0.2]\n  webhook_allowed_networks: [\"127.0.0.0/8\"]\n",
        "",
    );
    let (_, delivery) = test_event(&admin, &admin.root, &ep);
    let d = delivery_in(&admin, &delivery, "delivered", 20);
    assert_eq!(statuses(&d), [None, Some(302), None, Some(204)]);
    let log = d["attempt_log"].as_array().unwrap();
    assert_eq!(log[0]["error"], "no answer within 1000 ms");
    assert!(
        log[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("HTTP 302 (redirects are not followed)"),
        "{}",
        log[1]
    );
    // A connection closed without an answer: an error that names no URL.
    let closed = log[2]["error"].as_str().unwrap();
    assert!(!closed.is_empty());
    for a in log {
        let e = a["error"].as_str().unwrap_or_default();
        assert!(!e.contains("s3cretPathToken"), "{e}");
    }
    assert!(
        !worker.log().contains("s3cretPathToken"),
        "{}",
        worker.log()
    );
    // The timed-out request was abandoned by the worker.
    let got = receiver.wait_until("the timed-out connection to close", 10, |r| {
        r[0].client_gone
    });
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|r| r.path == secret_path), "{got:?}");
}

#[test]
fn endpoints_are_changed_checked_and_deleted() {
    let (admin, tenant) = admin_and_tenant();
    let token = admin.token_for(&tenant);
    let receiver = Receiver::start();
    let (ep, _) = endpoint(&admin, &token, json!({"url": receiver.url("/hook")}));
    let path = format!("/api/v1/webhooks/{ep}");
    let before = admin.call(&token, "GET", &path, None).body;
    assert_eq!(before["format"], "standard");
    assert_eq!(before["enabled"], true);
    assert_eq!(before["events"], json!([]));

    // Refusals change nothing.
    for (patch, status, field) in [
        (json!({"url": "http://10.0.0.1/"}), 422, Some("url")),
        (
            json!({"events": ["key.created", "nope"]}),
            422,
            Some("events[1]"),
        ),
        (json!({"format": "xml"}), 422, Some("format")),
        (json!({"description": "a\u{7}b"}), 422, Some("description")),
        (json!({"secret": "whsec_AAAA"}), 400, None),
        (
            json!({"tenant_id": "00000000-0000-4000-8000-000000000000"}),
            400,
            None,
        ),
        (json!({"enabled": "yes"}), 400, None),
        (json!({"colour": "red"}), 400, None),
    ] {
        let r = admin.call(&token, "PATCH", &path, Some(patch.clone()));
        assert_eq!(r.status, status, "{patch}: {}", r.body);
        if let Some(f) = field {
            assert_eq!(r.fields(), [f], "{patch}: {}", r.body);
        }
    }
    assert_eq!(admin.call(&token, "GET", &path, None).body, before);

    // A change, then a disabled endpoint takes no test event.
    let r = admin.call(
        &token,
        "PATCH",
        &path,
        Some(json!({"events": ["alert.fired"], "format": "slack", "description": "ops", "enabled": false})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["events"], json!(["alert.fired"]));
    assert_eq!(r.body["format"], "slack");
    assert_eq!(r.body["enabled"], false);
    assert_eq!(r.body["url"], before["url"]);
    let r = admin.call(&token, "POST", &format!("{path}/test"), None);
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(
        admin
            .db
            .sql("SELECT count(*) FROM events WHERE type = 'webhook.test'"),
        "0"
    );

    let r = admin.call(&token, "DELETE", &path, None);
    assert_eq!(r.status, 204);
    assert_eq!(admin.call(&token, "GET", &path, None).status, 404);
    assert_eq!(admin.call(&token, "DELETE", &path, None).status, 404);
}

#[test]
fn endpoints_get_only_the_event_types_they_subscribe_to() {
    let (admin, tenant) = admin_and_tenant();
    let token = admin.token_for(&tenant);
    let (keys, all, alerts) = (Receiver::start(), Receiver::start(), Receiver::start());
    let (keys_ep, keys_secret) = endpoint(
        &admin,
        &token,
        json!({"url": keys.url("/keys"), "events": ["key.created"]}),
    );
    let (all_ep, _) = endpoint(&admin, &token, json!({"url": all.url("/all")}));
    let (alerts_ep, _) = endpoint(
        &admin,
        &token,
        json!({"url": alerts.url("/alerts"), "events": ["alert.fired"]}),
    );
    let _worker = Worker::start(&admin.db, QUICK_WORKER, "");

    // A real event source: creating an API key (key.created, and config.changed).
    let r = admin.call(
        &token,
        "POST",
        "/api/v1/api-keys",
        Some(json!({"name": "CI"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let key_id = id(&r.body);
    let plaintext = r.body["key"].as_str().unwrap().to_string();

    // Every delivery of the event is made in the same transaction as the event, so once
    // those that exist are delivered, nothing else is coming.
    let delivered = |ep: &str| -> Vec<Value> {
        let r = admin.call(
            &token,
            "GET",
            &format!("/api/v1/webhooks/{ep}/deliveries"),
            None,
        );
        r.body.as_array().unwrap().clone()
    };
    wait_for("every delivery to be delivered", 20, || {
        let d: Vec<Value> = [&keys_ep, &all_ep, &alerts_ep]
            .iter()
            .flat_map(|ep| delivered(ep))
            .collect();
        d.iter().all(|x| x["state"] == "delivered").then_some(())
    });
    assert!(delivered(&alerts_ep).is_empty());
    let got = keys.wait_for_requests(1, 5);
    assert_eq!(got.len(), 1, "{got:?}");
    let body = got[0].json();
    assert_eq!(body["type"], "key.created");
    assert_eq!(body["data"]["api_key_id"], key_id.as_str());
    assert_eq!(body["data"]["name"], "CI");
    assert!(
        !got[0].text().contains(&plaintext),
        "the key itself is never sent"
    );
    assert!(verify_request(&keys_secret, &got[0]));

    let to_all = delivered(&all_ep);
    let types: std::collections::BTreeSet<&str> = to_all
        .iter()
        .map(|d| d["event_type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains("key.created") && types.contains("config.changed"),
        "{types:?}"
    );
    // One request per delivery: none was sent twice.
    assert_eq!(all.count(), to_all.len());
    assert_eq!(alerts.count(), 0);
}
