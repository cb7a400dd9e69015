//! A configuration cut into tenants' parts (what incremental reloads recompile one by one).

use crate::{Config, ServerSettings};
use foldhash::{HashMap, HashMapExt};

impl Config {
    /// Each tenant's part (a `Config` with the default server settings holding that tenant
    /// and its origins, routes, keys, issuers and plans), in the order of `tenants`, and the
    /// server settings. Objects naming no configured tenant are left out (validation refuses
    /// them).
    pub fn split_tenants(self) -> (ServerSettings, Vec<Config>) {
        let mut parts: Vec<Config> = Vec::with_capacity(self.tenants.len());
        let mut index: HashMap<String, usize> = HashMap::with_capacity(self.tenants.len());
        for t in self.tenants {
            index.insert(t.id.clone(), parts.len());
            parts.push(Config {
                tenants: vec![t],
                ..Config::default()
            });
        }
        macro_rules! deal {
            ($field:ident) => {
                for x in self.$field {
                    if let Some(&i) = index.get(&x.tenant_id) {
                        parts[i].$field.push(x);
                    }
                }
            };
        }
        deal!(origins);
        deal!(routes);
        deal!(api_keys);
        deal!(jwt_issuers);
        deal!(plans);
        (self.server, parts)
    }

    /// The one tenant of a part, if it is one.
    pub fn sole_tenant(&self) -> Option<&crate::Tenant> {
        match self.tenants.as_slice() {
            [t] => Some(t),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_join_round_trip() {
        let cfg = Config::from_yaml_validated(
            r#"
tenants:
  - {id: a, name: A, subdomain: a}
  - {id: b, name: B, subdomain: b}
origins:
  - {id: oa, tenant_id: a, targets: [{url: "http://127.0.0.1:1"}]}
  - {id: ob, tenant_id: b, targets: [{url: "http://127.0.0.1:2"}]}
routes:
  - {id: rb, tenant_id: b, path_pattern: "/*", origin_id: ob}
  - {id: ra, tenant_id: a, path_pattern: "/*", origin_id: oa}
"#,
        )
        .unwrap();
        let (server, parts) = cfg.clone().split_tenants();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].sole_tenant().unwrap().id, "a");
        assert_eq!(parts[0].routes[0].id, "ra");
        assert_eq!(parts[1].origins[0].id, "ob");
        assert_eq!(server, cfg.server);
        assert_eq!(parts[0].origins[0].id, "oa");
        assert_eq!(parts[1].routes[0].id, "rb");
    }
}
