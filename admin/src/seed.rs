//! `vantage-admin seed`: load the demo tenants of `conf/demo.yaml` (acme and globex, their
//! origins, routes, plans and the demo API key) into Postgres. Idempotent: the ids are derived from
//! the demo names, and a second run updates the same rows.

use crate::store::Resource;
use crate::write::{Change, UnitOfWork};
use anyhow::Context;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
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

/// `cfg` with every id replaced by its stable UUID (references follow).
pub fn with_uuids(mut cfg: Config) -> Config {
    let mut tenants = HashMap::new();
    let mut origins = HashMap::new();
    let mut plans = HashMap::new();
    for p in &mut cfg.plans {
        let new = demo_uuid("plan", &p.id).to_string();
        plans.insert(p.id.clone(), new.clone());
        p.id = new;
    }
    let plan = |p: &mut Option<String>| {
        if let Some(new) = p.as_ref().and_then(|old| plans.get(old)) {
            *p = Some(new.clone());
        }
    };
    for t in &mut cfg.tenants {
        let new = demo_uuid("tenant", &t.id).to_string();
        tenants.insert(t.id.clone(), new.clone());
        t.id = new;
        plan(&mut t.plan_id);
    }
    let tenant = |s: &str| tenants.get(s).cloned().unwrap_or_else(|| s.to_string());
    for p in &mut cfg.plans {
        p.tenant_id = tenant(&p.tenant_id);
    }
    for o in &mut cfg.origins {
        let new = demo_uuid("origin", &o.id).to_string();
        origins.insert(o.id.clone(), new.clone());
        o.id = new;
        o.tenant_id = tenant(&o.tenant_id);
    }
    for r in &mut cfg.routes {
        r.id = demo_uuid("route", &r.id).to_string();
        r.tenant_id = tenant(&r.tenant_id);
        for id in r.origin_refs_mut() {
            if let Some(new) = origins.get(id.as_str()) {
                *id = new.clone();
            }
        }
    }
    for k in &mut cfg.api_keys {
        k.id = demo_uuid("api_key", &k.id).to_string();
        k.tenant_id = tenant(&k.tenant_id);
        plan(&mut k.plan_id);
    }
    for j in &mut cfg.jwt_issuers {
        j.id = demo_uuid("jwt_issuer", &j.id).to_string();
        j.tenant_id = tenant(&j.tenant_id);
    }
    cfg
}

fn upsert_into<R: Resource>(list: &mut Vec<R>, item: &R) {
    match list.iter().position(|x| x.id() == item.id()) {
        Some(i) => list[i] = item.clone(),
        None => list.push(item.clone()),
    }
}

/// Write `yaml` (default: the demo) into the database in one validated unit of work,
/// validated for the fleet `fleet` describes. Returns the committed config version. No
/// notice is published (the command has no publisher): the proxies' version poll picks the
/// change up.
pub async fn seed(
    url: &str,
    yaml: Option<&str>,
    fleet: &crate::config::AdminConfig,
) -> anyhow::Result<(i64, Config)> {
    let demo = Config::from_yaml_validated(yaml.unwrap_or(DEMO_YAML)).context("seed config")?;
    let demo = with_uuids(demo);
    let context = fleet
        .resource_context()
        .map_err(|e| anyhow::anyhow!("base_domains / jwks_allowed_networks: {e}"))?;
    let fail = |e| anyhow::anyhow!("{e:?}");
    let mut client = crate::db::connect(url).await?;
    let mut w = UnitOfWork::config(&mut client, &context, None, None)
        .await
        .map_err(fail)?;
    let cfg = w.candidate_mut();
    for t in &demo.tenants {
        upsert_into(&mut cfg.tenants, t);
    }
    for o in &demo.origins {
        upsert_into(&mut cfg.origins, o);
    }
    for r in &demo.routes {
        upsert_into(&mut cfg.routes, r);
    }
    for k in &demo.api_keys {
        upsert_into(&mut cfg.api_keys, k);
    }
    for j in &demo.jwt_issuers {
        upsert_into(&mut cfg.jwt_issuers, j);
    }
    for p in &demo.plans {
        upsert_into(&mut cfg.plans, p);
    }
    let w = w
        .validate(Change::Import)
        .map_err(|e| anyhow::anyhow!("the seed does not fit the existing configuration: {e:?}"))?;
    // A tenant's plan is a plan of that tenant: the tenant first (without its plan), then
    // the plans, then the tenant's plan.
    for t in &demo.tenants {
        let without_plan = vantage_model::Tenant {
            plan_id: None,
            ..t.clone()
        };
        w.save(&without_plan).await.map_err(fail)?;
    }
    for p in &demo.plans {
        w.save(p).await.map_err(fail)?;
    }
    for t in demo.tenants.iter().filter(|t| t.plan_id.is_some()) {
        w.save(t).await.map_err(fail)?;
    }
    for o in &demo.origins {
        w.save(o).await.map_err(fail)?;
    }
    for r in &demo.routes {
        w.save(r).await.map_err(fail)?;
    }
    for k in &demo.api_keys {
        w.save(k).await.map_err(fail)?;
    }
    for j in &demo.jwt_issuers {
        w.save(j).await.map_err(fail)?;
    }
    let version = w.commit(None).await.map_err(fail)?;
    Ok((version, demo))
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
