//! `vantage-admin seed`: load the demo tenants of `conf/demo.yaml` (acme and globex, their
//! origins, routes, plans and the demo API key) into Postgres: `config apply` of that file
//! without `--prune` ([`crate::sync`]). Idempotent: the ids are derived from the demo names,
//! and a second run finds nothing to change.

use anyhow::Context;
use sha2::{Digest, Sha256};
use vantage_model::Config;

/// The demo configuration the proxy embeds.
pub const DEMO_YAML: &str = include_str!("../../conf/demo.yaml");

/// A stable UUID for a demo id (random-looking, the same on every run).
pub fn demo_uuid(kind: &str, id: &str) -> uuid::Uuid {
    let digest = Sha256::digest(format!("vantage-demo:{kind}:{id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// `cfg` with every id that is not a UUID replaced by its stable UUID ([`demo_uuid`]),
/// references following; UUIDs stay ([`crate::sync::resolve_ids`]).
pub fn with_uuids(cfg: Config) -> Config {
    crate::sync::resolve_ids(cfg)
}

/// Write `yaml` (default: the demo) into the database in one validated unit of work,
/// validated for the fleet `fleet` describes: `config apply` of the file without `--prune`
/// ([`crate::sync::apply`]), so a second run finds nothing to change. Returns the config
/// version (the committed one, or the current one when nothing changed) and the
/// configuration written. No notice is published (the command has no publisher): the
/// proxies' version poll picks the change up.
pub async fn seed(
    url: &str,
    yaml: Option<&str>,
    fleet: &crate::config::AdminConfig,
) -> anyhow::Result<(i64, Config)> {
    let demo = Config::from_yaml_validated(yaml.unwrap_or(DEMO_YAML)).context("seed config")?;
    let context = fleet
        .resource_context()
        .map_err(|e| anyhow::anyhow!("base_domains / jwks_allowed_networks: {e}"))?;
    let mut client = crate::db::connect(url).await?;
    let options = crate::sync::ApplyOptions {
        context: &context,
        publisher: None,
        scope: None,
        prune: false,
        dry_run: false,
    };
    let applied = crate::sync::apply(&mut client, demo, &options)
        .await
        .context("the seed does not fit the existing configuration")?;
    Ok((applied.version, applied.planned.desired))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_ids_are_stable_uuids_and_the_result_validates() {
        assert_eq!(demo_uuid("tenant", "acme"), demo_uuid("tenant", "acme"));
        assert_ne!(demo_uuid("tenant", "acme"), demo_uuid("origin", "acme"));
        let cfg = with_uuids(Config::from_yaml_validated(DEMO_YAML).unwrap());
        cfg.validate().unwrap();
        let mut routes = cfg.routes.clone();
        // Every origin a route names follows, its split's and mirror's included.
        assert!(routes
            .iter_mut()
            .flat_map(|r| r.origin_refs_mut())
            .all(|id| uuid::Uuid::parse_str(id).is_ok()));
        assert!(routes.iter().any(|r| r.traffic.split.is_some()));
    }

    #[test]
    fn plan_references_follow_the_plans_new_ids() {
        // The demo's key is on plan acme-pro; bind the tenant to it too.
        let mut cfg = Config::from_yaml_validated(DEMO_YAML).unwrap();
        let acme = cfg.tenants[0].id.clone();
        let demo_plan = cfg
            .plans
            .iter()
            .find(|p| p.tenant_id == acme)
            .expect("the demo's plan")
            .id
            .clone();
        cfg.tenants[0].plan_id = Some(demo_plan.clone());
        assert!(cfg
            .api_keys
            .iter()
            .any(|k| k.plan_id.as_ref() == Some(&demo_plan)));
        cfg.validate().unwrap();
        let cfg = with_uuids(cfg);
        cfg.validate().unwrap();
        let plan = &cfg.plans[0];
        assert_eq!(plan.id, demo_uuid("plan", &demo_plan).to_string());
        assert_eq!(plan.tenant_id, cfg.tenants[0].id);
        assert_eq!(cfg.tenants[0].plan_id.as_ref(), Some(&plan.id));
        assert!(cfg
            .api_keys
            .iter()
            .any(|k| k.plan_id.as_ref() == Some(&plan.id)));
    }
}
