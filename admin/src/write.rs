//! The one write path of the admin service: every change to the database is a
//! [`UnitOfWork`], one transaction that commits at most once.
//!
//! A write of what the proxies serve (tenants, origins, routes, API keys, JWT issuers) goes
//! through every step, in this order, enforced by the types:
//!
//! 1. [`UnitOfWork::config`]: open the transaction, bump the config version (which also
//!    makes config writers wait for each other until commit) and load the configuration;
//! 2. change the candidate ([`UnitOfWork::candidate_mut`]);
//! 3. [`UnitOfWork::validate`] it against the fleet's [`ResourceContext`]: only problems the
//!    change introduced refuse it, each mapped to its status by its [`ErrorKind`];
//! 4. write the rows ([`UnitOfWork::save`], [`UnitOfWork::remove`]);
//! 5. [`UnitOfWork::commit`] and announce the committed version on Redis.
//!
//! Writes of the admin's own data (its users) use [`UnitOfWork::admin`]: the same
//! transaction, but no version bump, no validation of the configuration and no announcement,
//! since the proxies serve nothing of it and must not reload for it.

use crate::error::{ApiError, Field};
use crate::publish::Publisher;
use crate::store::{load_config_for, Resource, Table};
use std::collections::HashSet;
use tokio_postgres::{Client, Transaction};
use uuid::Uuid;
use vantage_model::{validate_resources, Config, ErrorKind, FieldError, ResourceContext};

/// What a configuration write did, for deciding and wording a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// Added or replaced `kind[index]` of the candidate (e.g. `("routes", 3)`). Problems
    /// about it lose their `kind[index].` prefix, and the other side of a conflict (another
    /// tenant's business) is not reported.
    Upsert(&'a str, usize),
    /// Removed something: problems it leaves behind mean the thing is still in use.
    Delete,
    /// Added or replaced many things at once (the seed): every problem counts as it is.
    Import,
}

/// Stage of a [`UnitOfWork`] on the admin's own data: no configuration involved.
pub struct AdminData;

/// Stage of a configuration [`UnitOfWork`] before validation: the candidate may change.
pub struct Candidate<'s> {
    version: i64,
    context: &'s ResourceContext,
    announce: Option<&'s Publisher>,
    before: Config,
    config: Config,
}

/// Stage of a configuration [`UnitOfWork`] after validation: rows may be written.
pub struct Validated<'s> {
    version: i64,
    announce: Option<&'s Publisher>,
    before: Config,
    after: Config,
}

/// One transaction of the admin service; `S` is its stage ([`AdminData`], [`Candidate`],
/// [`Validated`]). Dropped without commit, it rolls back.
pub struct UnitOfWork<'c, S> {
    tx: Transaction<'c>,
    stage: S,
}

impl<'c, S> UnitOfWork<'c, S> {
    /// The transaction, for reads and for statements of this write that are not row upserts.
    pub fn tx(&self) -> &Transaction<'c> {
        &self.tx
    }
}

impl<'c> UnitOfWork<'c, AdminData> {
    /// Start a write of data the proxies do not serve (users): the config version stays.
    pub async fn admin(client: &'c mut Client) -> Result<Self, ApiError> {
        Ok(UnitOfWork {
            tx: client.transaction().await?,
            stage: AdminData,
        })
    }

    /// Commit. Nothing is announced: the proxies have nothing to reload.
    pub async fn commit(self) -> Result<(), ApiError> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl<'c, 's> UnitOfWork<'c, Candidate<'s>> {
    /// Start a write of the proxies' configuration: bump the version and load the current
    /// configuration as the candidate — for a write that concerns one tenant (`scope`),
    /// every tenant row and that tenant's resources (see [`load_config_for`]); else all of
    /// it. Candidates are validated for the fleet `context`; the commit is announced
    /// through `announce` when there is one.
    pub async fn config(
        client: &'c mut Client,
        context: &'s ResourceContext,
        announce: Option<&'s Publisher>,
        scope: Option<Uuid>,
    ) -> Result<Self, ApiError> {
        let tx = client.transaction().await?;
        let version: i64 = tx
            .query_one("SELECT vantage_bump_config_version()", &[])
            .await?
            .get(0);
        let config = load_config_for(&tx, scope).await?;
        Ok(UnitOfWork {
            tx,
            stage: Candidate {
                version,
                context,
                announce,
                before: config.clone(),
                config,
            },
        })
    }

    /// The candidate configuration.
    pub fn candidate(&self) -> &Config {
        &self.stage.config
    }

    /// The candidate configuration, to change.
    pub fn candidate_mut(&mut self) -> &mut Config {
        &mut self.stage.config
    }

    /// Accept the candidate unless it has problems the configuration before did not have:
    /// 409 `already in use` when each of them is a conflict, 409 `still in use` when a
    /// delete left dangling references, else 422 listing them.
    pub fn validate(self, change: Change<'_>) -> Result<UnitOfWork<'c, Validated<'s>>, ApiError> {
        let Candidate {
            version,
            context,
            announce,
            before,
            config,
        } = self.stage;
        if let Err(errors) = validate_resources(&config, context) {
            // Problems the configuration already had are not this change's fault.
            let old: HashSet<FieldError> = validate_resources(&before, context)
                .err()
                .map(|e| e.0.into_iter().collect())
                .unwrap_or_default();
            let new: Vec<FieldError> = errors.0.into_iter().filter(|e| !old.contains(e)).collect();
            if let Some(refusal) = refusal(new, change) {
                return Err(refusal);
            }
        }
        Ok(UnitOfWork {
            tx: self.tx,
            stage: Validated {
                version,
                announce,
                before,
                after: config,
            },
        })
    }
}

impl UnitOfWork<'_, Validated<'_>> {
    /// Insert `item`'s row, or update it when its id exists.
    pub async fn save<R: Resource>(&self, item: &R) -> Result<(), ApiError> {
        item.upsert(&self.tx).await
    }

    /// Delete the `R` with `id` (its dependents go with it where the schema cascades).
    pub async fn remove<R: Table>(&self, id: Uuid) -> Result<(), ApiError> {
        self.tx
            .execute(&format!("DELETE FROM {} WHERE id = $1", R::KIND), &[&id])
            .await?;
        Ok(())
    }

    /// Record the events of the change (keys created, rotated or revoked, plans changed,
    /// `config.changed` per tenant; see [`crate::events::config_events`]) with their webhook
    /// deliveries, commit, then announce the committed version (for `tenant`, when the write
    /// concerned one tenant). Returns the version.
    pub async fn commit(self, tenant: Option<String>) -> Result<i64, ApiError> {
        let events =
            crate::events::config_events(&self.stage.before, &self.stage.after, self.stage.version);
        for (tenant, kind, data) in events {
            crate::events::emit(&self.tx, tenant, kind, data).await?;
        }
        self.tx.commit().await?;
        let version = self.stage.version;
        if let Some(p) = self.stage.announce {
            p.publish(version, tenant).await;
        }
        Ok(version)
    }
}

/// What a conflict says: that the value is taken, never by whom.
const TAKEN: &str = "is already in use";

/// The refusal for the problems `new` that `change` introduced, if any remain once the
/// other side of each conflict is left out.
fn refusal(mut new: Vec<FieldError>, change: Change<'_>) -> Option<ApiError> {
    let prefix = match change {
        Change::Upsert(kind, i) => Some(format!("{kind}[{i}].")),
        Change::Delete | Change::Import => None,
    };
    // A conflict is reported on both sides; the other side is another tenant's business.
    if let Some(p) = &prefix {
        new.retain(|e| e.kind != ErrorKind::Conflict || e.path.starts_with(p.as_str()));
    }
    if new.is_empty() {
        return None;
    }
    let all = |kind: ErrorKind| new.iter().all(|e| e.kind == kind);
    let (conflict, still_in_use) = (all(ErrorKind::Conflict), all(ErrorKind::Reference));
    let fields: Vec<Field> = new
        .iter()
        .map(|e| Field {
            path: prefix
                .as_deref()
                .and_then(|p| e.path.strip_prefix(p))
                .unwrap_or(&e.path)
                .to_string(),
            // A conflict names another tenant's resource: say only that it is taken.
            message: match e.kind {
                ErrorKind::Conflict => TAKEN.to_string(),
                ErrorKind::Invalid | ErrorKind::Reference => e.message.clone(),
            },
        })
        .collect();
    Some(if change == Change::Delete && still_in_use {
        ApiError::Conflict(
            "still in use: removing it would leave the configuration invalid".into(),
            fields,
        )
    } else if conflict {
        ApiError::Conflict("already in use".into(), fields)
    } else {
        ApiError::Invalid("the request failed validation".into(), fields)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(path: &str, kind: ErrorKind) -> FieldError {
        FieldError {
            path: path.into(),
            message: format!("message of {path}"),
            kind,
        }
    }

    fn status(e: &ApiError) -> (&'static str, Vec<Field>) {
        match e {
            ApiError::Conflict(m, f) if m.starts_with("still in use") => {
                ("still in use", f.clone())
            }
            ApiError::Conflict(_, f) => ("conflict", f.clone()),
            ApiError::Invalid(_, f) => ("invalid", f.clone()),
            other => panic!("unexpected refusal {other:?}"),
        }
    }

    #[test]
    fn kinds_decide_the_answer() {
        use ErrorKind::*;
        let upsert = Change::Upsert("tenants", 1);
        // Taken values: 409 saying only that they are taken, on the changed item's fields.
        let e = refusal(vec![problem("tenants[1].subdomain", Conflict)], upsert).unwrap();
        let (what, fields) = status(&e);
        assert_eq!(what, "conflict");
        assert_eq!(fields[0].path, "subdomain");
        assert_eq!(fields[0].message, TAKEN);
        // The other side of the conflict is not the caller's business, and alone it is no
        // refusal at all.
        assert!(refusal(vec![problem("tenants[0].subdomain", Conflict)], upsert).is_none());
        // Anything invalid or dangling on an upsert: 422 with every message.
        for mixed in [
            vec![
                problem("tenants[1].subdomain", Conflict),
                problem("tenants[1].name", Invalid),
            ],
            vec![problem("tenants[1].id", Reference)],
        ] {
            let (what, fields) = status(&refusal(mixed.clone(), upsert).unwrap());
            assert_eq!(what, "invalid");
            assert_eq!(fields.len(), mixed.len());
        }
        // References left by a delete: 409 still in use, paths as they are.
        let e = refusal(
            vec![problem("routes[0].origin_id", Reference)],
            Change::Delete,
        )
        .unwrap();
        let (what, fields) = status(&e);
        assert_eq!(what, "still in use");
        assert_eq!(fields[0].path, "routes[0].origin_id");
        assert_eq!(fields[0].message, "message of routes[0].origin_id");
        // An import is judged like anything else, every conflict counting.
        let e = refusal(
            vec![problem("tenants[0].subdomain", Conflict)],
            Change::Import,
        )
        .unwrap();
        assert_eq!(status(&e).0, "conflict");
        assert!(refusal(vec![], Change::Import).is_none());
    }
}
