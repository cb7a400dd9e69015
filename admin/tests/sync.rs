//! `vantage-admin config dump|diff|apply` (docs/sync.md): the real binary against databases
//! of each test's own on the real Postgres (and the shared Redis for the announcement).

use std::process::Command;
use vantage_admin::auth::sha256_hex;
use vantage_admin::seed::{demo_uuid, DEMO_YAML};
use vantage_model::Config;
use vantage_testkit::{admin_bin, admin_cli, temp_dir, Database, Subscriber, REDIS, SECRET};

/// What a `vantage-admin` run printed, and how it exited.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run `vantage-admin args` against `db` with extra environment `env` (no Redis, no notify
/// secret unless `env` gives them).
fn run_with(db: &Database, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(admin_bin());
    cmd.args(args)
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "warn")
        .env_remove("REDIS_URL")
        .env_remove("VANTAGE_NOTIFY_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("vantage-admin {args:?}: {e}"));
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn run(db: &Database, args: &[&str]) -> Run {
    run_with(db, args, &[])
}

/// `run`, expecting success.
fn ok(db: &Database, args: &[&str]) -> Run {
    let r = run(db, args);
    assert_eq!(r.code, 0, "{args:?}: {}{}", r.stdout, r.stderr);
    r
}

/// `run`, expecting exit code 1 (refused); returns stderr.
fn refused(db: &Database, args: &[&str]) -> String {
    let r = run(db, args);
    assert_eq!(
        r.code, 1,
        "{args:?} was not refused: {}{}",
        r.stdout, r.stderr
    );
    r.stderr
}

/// A file holding `text`; its path.
fn file(text: &str) -> String {
    let p = temp_dir("sync").join("config.yaml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// The YAML of a file for `cfg`, without `server:`.
fn yaml_of(cfg: &Config) -> String {
    let mut v = serde_json::to_value(cfg).unwrap();
    v.as_object_mut().unwrap().remove("server");
    serde_yaml::to_string(&v).unwrap()
}

fn dump(db: &Database, extra: &[&str]) -> String {
    let mut args = vec!["config", "dump"];
    args.extend_from_slice(extra);
    ok(db, &args).stdout
}

fn seeded() -> Database {
    let db = Database::migrated();
    admin_cli(&db, &["seed"]);
    db
}

fn version(db: &Database) -> i64 {
    db.sql("SELECT vantage_config_version()").parse().unwrap()
}

fn tenant<'a>(cfg: &'a Config, subdomain: &str) -> &'a vantage_model::Tenant {
    cfg.tenants
        .iter()
        .find(|t| t.subdomain == subdomain)
        .unwrap_or_else(|| panic!("tenant {subdomain}"))
}

#[test]
fn the_seeded_demo_round_trips_onto_an_empty_database_byte_for_byte() {
    let a = seeded();
    let first = dump(&a, &[]);
    // Deterministic, without server:, and the schema the proxy reads from a file.
    assert_eq!(dump(&a, &[]), first);
    assert!(!first.contains("server:"), "{first}");
    let cfg = Config::from_yaml_validated(&first).unwrap();
    let demo = Config::from_yaml(DEMO_YAML).unwrap();
    assert_eq!(
        (cfg.tenants.len(), cfg.origins.len(), cfg.routes.len()),
        (demo.tenants.len(), demo.origins.len(), demo.routes.len())
    );
    assert!(cfg.routes.iter().any(|r| r.traffic.split.is_some()));
    assert!(cfg.api_keys.iter().all(|k| k.plan_id.is_some()));
    let mut ids: Vec<&str> = cfg.routes.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        cfg.routes.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        "lists are sorted by id"
    );

    let b = Database::migrated();
    let before = version(&b);
    let path = file(&first);
    let total = cfg.tenants.len()
        + cfg.origins.len()
        + cfg.routes.len()
        + cfg.api_keys.len()
        + cfg.jwt_issuers.len()
        + cfg.plans.len();
    let r = ok(&b, &["config", "apply", "-f", &path]);
    assert!(
        r.stdout.contains(&format!(
            "applied: {total} added, 0 changed, 0 removed; config version {}",
            before + 1
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("version poll picks it up"),
        "{}",
        r.stdout
    );
    assert_eq!(version(&b), before + 1);
    assert_eq!(dump(&b, &[]), first, "dump → apply → dump is lossless");
    // The rows are there, with the same ids and the demo key's hash.
    assert_eq!(
        b.sql("SELECT key_hash FROM api_keys"),
        sha256_hex("vk_live_demo_acme_key_do_not_use_in_prod")
    );
    let ids = "SELECT string_agg(id::text, ',' ORDER BY id) FROM routes";
    assert_eq!(b.sql(ids), a.sql(ids));
    let plan = "SELECT p.name FROM api_keys k JOIN plans p ON p.id = k.plan_id";
    assert_eq!(b.sql(plan), "pro");

    // Applying it again changes nothing and keeps the version; the diff agrees.
    let r = ok(&b, &["config", "apply", "-f", &path]);
    assert_eq!(
        r.stdout,
        format!("no changes; config version stays {}\n", before + 1)
    );
    assert_eq!(version(&b), before + 1);
    let r = ok(&b, &["config", "diff", "-f", &path, "--exit-code"]);
    assert_eq!(r.stdout, "no changes\n");
}

#[test]
fn diff_shows_an_added_route_and_a_changed_origin_field_then_nothing_after_apply() {
    let db = seeded();
    let mut cfg = Config::from_yaml(&dump(&db, &[])).unwrap();
    let origin = cfg.origins[0].clone();
    let sub = cfg
        .tenants
        .iter()
        .find(|t| t.id == origin.tenant_id)
        .unwrap()
        .subdomain
        .clone();
    cfg.origins[0].retries = origin.retries + 2;
    cfg.origins[0].timeouts.read_ms = 7000;
    cfg.routes.push(vantage_model::Route {
        id: "added-route".into(),
        path_pattern: "/added/*".into(),
        methods: vec![],
        ..cfg
            .routes
            .iter()
            .find(|r| r.origin_id == origin.id && r.traffic.split.is_none())
            .unwrap()
            .clone()
    });
    let path = file(&yaml_of(&cfg));
    let v = version(&db);

    let r = run(&db, &["config", "diff", "-f", &path, "--exit-code"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    let added = demo_uuid("route", "added-route");
    assert!(
        r.stdout
            .contains(&format!("+ route {added} ({sub}: /added/*)\n")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(&format!("~ origin {} ({sub}: ", origin.id)),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!(
            "    retries: {} → {}\n",
            origin.retries,
            origin.retries + 2
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!(
            "    timeouts.read_ms: {} → 7000\n",
            origin.timeouts.read_ms
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.ends_with("1 to add, 1 to change, 0 to remove\n"),
        "{}",
        r.stdout
    );
    // Without --exit-code a diff with changes is a success; either way nothing is written.
    assert_eq!(ok(&db, &["config", "diff", "-f", &path]).stdout, r.stdout);
    assert_eq!(version(&db), v);

    let r = ok(&db, &["config", "apply", "-f", &path]);
    assert!(
        r.stdout.contains(&format!(
            "applied: 1 added, 1 changed, 0 removed; config version {}",
            v + 1
        )),
        "{}",
        r.stdout
    );
    assert_eq!(
        db.sql(&format!(
            "SELECT retries, timeouts->>'read_ms' FROM origins WHERE id = '{}'",
            origin.id
        )),
        format!("{}|7000", origin.retries + 2)
    );
    assert_eq!(
        db.sql(&format!(
            "SELECT path_pattern FROM routes WHERE id = '{added}'"
        )),
        "/added/*"
    );

    let r = ok(&db, &["config", "diff", "-f", &path, "--exit-code"]);
    assert_eq!(r.stdout, "no changes\n");
    let r = ok(&db, &["config", "apply", "-f", &path]);
    assert!(
        r.stdout.contains("no changes; config version stays"),
        "{}",
        r.stdout
    );
    assert_eq!(version(&db), v + 1);
}

#[test]
fn apply_refuses_a_dangling_origin_reference_with_its_path_and_writes_nothing() {
    let db = seeded();
    let before = dump(&db, &[]);
    let mut cfg = Config::from_yaml(&before).unwrap();
    cfg.routes[2].origin_id = "no-such-origin".into();
    cfg.origins[1].targets[0].weight = 0;
    cfg.origins[0].retries = 5; // a fine change, refused with the rest
    let path = file(&yaml_of(&cfg));
    let v = version(&db);

    let err = refused(&db, &["config", "apply", "-f", &path]);
    assert!(err.contains("nothing was written"), "{err}");
    assert!(
        err.contains("routes[2].origin_id: no origin has id 'no-such-origin'"),
        "{err}"
    );
    assert!(err.contains("origins[1].targets[0].weight: "), "{err}");
    assert_eq!(version(&db), v);
    assert_eq!(dump(&db, &[]), before);
    // The diff refuses it the same way (for CI), with exit code 1 rather than 2.
    let r = run(&db, &["config", "diff", "-f", &path, "--exit-code"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("routes[2].origin_id"), "{}", r.stderr);
}

#[test]
fn prune_removes_a_route_the_file_dropped_and_without_prune_it_stays() {
    let db = seeded();
    let mut cfg = Config::from_yaml(&dump(&db, &[])).unwrap();
    let dropped = cfg.routes.remove(0);
    let routes = cfg.routes.len() + 1;
    let path = file(&yaml_of(&cfg));
    let count = format!("SELECT count(*) FROM routes WHERE id = '{}'", dropped.id);
    let v = version(&db);

    let r = ok(&db, &["config", "apply", "-f", &path]);
    assert_eq!(
        r.stdout,
        format!(
            "1 stored resource not in the file is left alone (--prune would remove it)\n\
             no changes; config version stays {v}\n"
        )
    );
    assert_eq!(db.sql(&count), "1");

    let r = run(
        &db,
        &["config", "diff", "-f", &path, "--prune", "--exit-code"],
    );
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.starts_with(&format!("- route {} (", dropped.id)),
        "{}",
        r.stdout
    );
    assert!(r.stdout.ends_with("0 to add, 0 to change, 1 to remove\n"));

    let r = ok(&db, &["config", "apply", "-f", &path, "--prune"]);
    assert!(
        r.stdout.contains(&format!(
            "applied: 0 added, 0 changed, 1 removed; config version {}",
            v + 1
        )),
        "{}",
        r.stdout
    );
    assert_eq!(db.sql(&count), "0");
    assert_eq!(
        db.sql("SELECT count(*) FROM routes"),
        (routes - 1).to_string()
    );
    assert_eq!(
        ok(&db, &["config", "diff", "-f", &path, "--prune"]).stdout,
        "no changes\n"
    );

    // Pruning a tenant is said plainly, with what goes with it; an empty file never prunes.
    let globex = tenant(&cfg, "globex").id.clone();
    cfg.tenants.retain(|t| t.id != globex);
    cfg.origins.retain(|o| o.tenant_id != globex);
    cfg.routes.retain(|r| r.tenant_id != globex);
    let r = ok(
        &db,
        &["config", "diff", "--prune", "-f", &file(&yaml_of(&cfg))],
    );
    assert!(
        r.stdout.starts_with(&format!(
            "- tenant {globex} (subdomain globex)\n    with everything else of the tenant: its users"
        )),
        "{}",
        r.stdout
    );
    let err = refused(
        &db,
        &["config", "apply", "--prune", "-f", &file("tenants: []\n")],
    );
    assert!(err.contains("tenants: the file lists no tenant"), "{err}");
    assert_eq!(version(&db), v + 1);
}

#[test]
fn a_tenant_scoped_dump_holds_one_tenant_and_a_scoped_apply_cannot_touch_another() {
    let db = seeded();
    let whole = dump(&db, &[]);
    let all = Config::from_yaml(&whole).unwrap();
    let (acme, globex) = (tenant(&all, "acme").clone(), tenant(&all, "globex").clone());

    let text = dump(&db, &["--tenant", "globex"]);
    assert_eq!(
        dump(&db, &["--tenant", &globex.id]),
        text,
        "by id or subdomain"
    );
    assert!(!text.contains(&acme.id), "{text}");
    let mine = Config::from_yaml(&text).unwrap();
    assert_eq!(mine.tenants, vec![globex.clone()]);
    assert_eq!(
        mine.origins.len(),
        all.origins
            .iter()
            .filter(|o| o.tenant_id == globex.id)
            .count()
    );
    assert!(mine.routes.iter().all(|r| r.tenant_id == globex.id));
    assert!(!mine.routes.is_empty());

    let v = version(&db);
    let scoped = |cfg: &Config| -> String {
        let path = file(&yaml_of(cfg));
        refused(&db, &["config", "apply", "--tenant", "globex", "-f", &path])
    };
    // Attack: take over acme's origin by naming its id in globex's file.
    let theirs = all.origins.iter().find(|o| o.tenant_id == acme.id).unwrap();
    let mut evil = mine.clone();
    let old = std::mem::replace(&mut evil.origins[0].id, theirs.id.clone());
    for r in &mut evil.routes {
        for o in r.origin_refs_mut() {
            if *o == old {
                *o = theirs.id.clone();
            }
        }
    }
    let err = scoped(&evil);
    assert!(err.contains("origins[0].id: is already in use"), "{err}");
    assert!(
        !err.contains("acme"),
        "names nothing of the other tenant: {err}"
    );
    // Attack: a route of acme's (its tenant and origin) slipped into globex's file.
    let mut evil = mine.clone();
    let mut route = all
        .routes
        .iter()
        .find(|r| r.tenant_id == acme.id)
        .unwrap()
        .clone();
    route.id = "sneaky".into();
    route.path_pattern = "/sneaky/*".into();
    evil.routes.push(route);
    let n = evil.routes.len() - 1;
    let err = scoped(&evil);
    assert!(
        err.contains(&format!("routes[{n}].tenant_id: must be tenant globex")),
        "{err}"
    );
    // Attack: acme itself in globex's file.
    let mut evil = mine.clone();
    evil.tenants.push(acme.clone());
    evil.tenants.sort_by(|a, b| b.id.cmp(&a.id));
    let i = evil.tenants.iter().position(|t| t.id == acme.id).unwrap();
    let err = scoped(&evil);
    assert!(
        err.contains(&format!("tenants[{i}].id: is not tenant globex")),
        "{err}"
    );
    // A file of another tenant altogether.
    let acme_file = file(&dump(&db, &["--tenant", "acme"]));
    let err = refused(
        &db,
        &["config", "apply", "--tenant", "globex", "-f", &acme_file],
    );
    assert!(
        err.contains("tenants: the file does not list tenant globex"),
        "{err}"
    );
    assert_eq!(version(&db), v);
    assert_eq!(dump(&db, &[]), whole, "nothing was written");

    // A tenant's --prune removes only what is that tenant's.
    let mut less = mine.clone();
    let dropped = less.routes.pop().unwrap();
    let path = file(&yaml_of(&less));
    let r = ok(
        &db,
        &[
            "config", "apply", "--tenant", "globex", "--prune", "-f", &path,
        ],
    );
    assert!(
        r.stdout
            .starts_with(&format!("- route {} (globex: ", dropped.id)),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("applied: 0 added, 0 changed, 1 removed"),
        "{}",
        r.stdout
    );
    let after = Config::from_yaml(&dump(&db, &[])).unwrap();
    assert_eq!(after.routes.len(), all.routes.len() - 1);
    assert_eq!(
        after
            .routes
            .iter()
            .filter(|r| r.tenant_id == acme.id)
            .count(),
        all.routes.iter().filter(|r| r.tenant_id == acme.id).count()
    );
}

#[test]
fn shared_secrets_never_appear_in_a_dump_and_survive_dump_then_apply() {
    let db = seeded();
    let secret = "jwt-shared-secret-never-dumped-0123456789";
    let acme = db.sql("SELECT id FROM tenants WHERE subdomain = 'acme'");
    let issuer = uuid::Uuid::new_v4();
    db.sql(&format!(
        "INSERT INTO jwt_issuers (id, tenant_id, issuer, shared_secret, algorithms)
         VALUES ('{issuer}', '{acme}', 'https://issuer.acme.test', '{secret}', '{{HS256}}')"
    ));
    let stored = format!("SELECT shared_secret FROM jwt_issuers WHERE id = '{issuer}'");

    let r = ok(&db, &["config", "dump"]);
    assert!(!r.stdout.contains(secret), "{}", r.stdout);
    assert!(r.stdout.contains(&issuer.to_string()));
    assert!(
        r.stderr.contains(&format!(
            "note: jwt_issuers[0] (id {issuer}, tenant acme): shared_secret left out"
        )),
        "{}",
        r.stderr
    );
    let out = temp_dir("sync").join("dump.yaml");
    let out = out.to_str().unwrap();
    ok(&db, &["config", "dump", "-o", out]);
    let text = std::fs::read_to_string(out).unwrap();
    assert_eq!(text, r.stdout);
    assert!(!text.contains(secret));

    // On the same database the stored secret is kept: nothing changes.
    let v = version(&db);
    let r = ok(&db, &["config", "apply", "-f", out]);
    assert!(r.stdout.contains("no changes"), "{}", r.stdout);
    assert!(r.stderr.contains("the stored one is kept"), "{}", r.stderr);
    assert_eq!(db.sql(&stored), secret);
    assert_eq!(version(&db), v);

    // Where the issuer does not exist, the file must give it.
    let empty = Database::migrated();
    let err = refused(&empty, &["config", "apply", "-f", out]);
    assert!(
        err.contains("jwt_issuers[0].shared_secret: is not in the file"),
        "{err}"
    );
    assert_eq!(empty.sql("SELECT count(*) FROM tenants"), "0");
    // ... for instance from the environment.
    let mut cfg = Config::from_yaml(&text).unwrap();
    cfg.jwt_issuers[0].shared_secret = Some("${env:ACME_JWT_SECRET}".into());
    let with_env = file(&yaml_of(&cfg));
    let err = refused(&empty, &["config", "apply", "-f", &with_env]);
    assert!(
        err.contains(
            "jwt_issuers[0].shared_secret: environment variable ACME_JWT_SECRET is not set"
        ),
        "{err}"
    );
    let args = ["config", "apply", "-f", with_env.as_str()];
    let r = run_with(&empty, &args, &[("ACME_JWT_SECRET", secret)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stdout.contains(secret) && !r.stderr.contains(secret));
    assert_eq!(empty.sql(&stored), secret);
    assert_eq!(dump(&empty, &[]), text);

    // A new secret is a change the diff shows without either value.
    let other = "another-jwt-shared-secret-0123456789abc";
    let args = ["config", "diff", "-f", with_env.as_str()];
    let r = run_with(&db, &args, &[("ACME_JWT_SECRET", other)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(&format!(
            "~ jwt_issuer {issuer} (acme: https://issuer.acme.test)\n    shared_secret: (secret) → (secret)\n"
        )),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains(secret) && !r.stdout.contains(other));
}

#[test]
fn bad_input_is_refused_clearly_and_writes_nothing() {
    let db = seeded();
    let v = version(&db);
    let apply = |text: &str| refused(&db, &["config", "apply", "-f", &file(text)]);

    let err = refused(&db, &["config", "apply", "-f", "/nonexistent/vantage.yaml"]);
    assert!(
        err.contains("cannot read /nonexistent/vantage.yaml"),
        "{err}"
    );
    let err = apply("tenants:\n  - id: a\n    name: A: b\n    subdomain: a\n");
    assert!(
        err.contains("mapping values are not allowed in this context at line 3"),
        "{err}"
    );
    let err = apply("tenants:\n  - id: a\n    name: A\n    subdomain: a\n    colour: red\n");
    assert!(
        err.contains("tenants[0]: unknown field `colour`") && err.contains("line 5"),
        "{err}"
    );
    let err = apply("routers: []\n");
    assert!(err.contains("unknown field `routers`"), "{err}");
    let err = refused(
        &db,
        &[
            "config",
            "diff",
            "--tenant",
            "nobody",
            "-f",
            &file("tenants: []\n"),
        ],
    );
    assert!(
        err.contains("--tenant nobody: no tenant has this id or subdomain"),
        "{err}"
    );
    let err = refused(&db, &["config", "dump", "--tenant", "nobody"]);
    assert!(err.contains("no tenant has this id or subdomain"), "{err}");
    // A bad expiry time and a subdomain another tenant holds, every problem with its path.
    let err = apply(
        "tenants: [{id: initech, name: Initech, subdomain: acme}]
api_keys: [{id: k, tenant_id: initech, name: K, expires_at: soon,
            key_hash: 2222222222222222222222222222222222222222222222222222222222222222}]",
    );
    assert!(err.contains("api_keys[0].expires_at: "), "{err}");
    assert!(
        err.contains("tenants[0].subdomain: is already in use"),
        "{err}"
    );
    assert_eq!(version(&db), v);
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_announces_the_committed_version_on_redis_and_a_dry_run_keeps_nothing() {
    let db = Database::migrated();
    let prefix = format!("vts{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let settings = temp_dir("sync").join("admin.yaml");
    std::fs::write(&settings, format!("redis_prefix: {prefix}\n")).unwrap();
    let settings = settings.to_str().unwrap().to_string();
    let mut sub = Subscriber::new(&format!("{prefix}:config")).await;
    // The demo file as it is: its ids are names, its server: section is not stored.
    let path = file(DEMO_YAML);
    let env = [("REDIS_URL", REDIS), ("VANTAGE_NOTIFY_SECRET", SECRET)];
    let v = version(&db);

    let args = [
        "--config",
        &settings,
        "config",
        "apply",
        "-f",
        &path,
        "--dry-run",
    ];
    let r = run_with(&db, &args, &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(&format!(
            "dry run: 14 to add, 0 to change, 0 to remove; rolled back, config version stays {v}"
        )),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("server: is ignored"), "{}", r.stderr);
    assert_eq!(db.sql("SELECT count(*) FROM tenants"), "0");
    assert_eq!(version(&db), v);

    let r = run_with(&db, &args[..args.len() - 1], &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(&format!(
            "applied: 14 added, 0 changed, 0 removed; config version {}\nannounced on Redis channel {prefix}:config\n",
            v + 1
        )),
        "{}",
        r.stdout
    );
    let notice = vantage_model::notify::verify(SECRET, &sub.next().await).unwrap();
    assert_eq!(notice.version, v + 1);
    assert_eq!(version(&db), v + 1);
    // The demo's names became the seed's ids: seeding now changes nothing.
    admin_cli(&db, &["seed"]);
    assert_eq!(version(&db), v + 1);
}
