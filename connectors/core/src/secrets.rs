//! The secrets a task asks for (flytekit's `secret_requests`, the template's `security_context.secrets`)
//! and how flytekit reads them, so every runtime provides them where the task looks:
//!
//! - flytekit's own lookup (`current_context().secrets.get(group, key)`): the variable
//!   `<FLYTE_SECRETS_ENV_PREFIX, default _FSEC_><GROUP>[_<GROUP_VERSION>]_<KEY>` (upper-cased), else the
//!   file `<FLYTE_SECRETS_DEFAULT_DIR, default /etc/secrets>/<group>/[<group_version>/]<FLYTE_SECRETS_FILE_PREFIX><key>`
//!   (lower-cased);
//! - a request that names `env_var`: the value in that variable (`ENV_VAR` or `ANY` mounts) or the path of
//!   a file holding it (`FILE`).
//!
//! Values are never logged or written anywhere but where the task reads them.

use std::path::{Path, PathBuf};

use updraft_proto::core::{TaskTemplate, secret::MountType};

/// flytekit's default prefix of secret variables.
pub const ENV_PREFIX: &str = "_FSEC_";

/// One secret a task asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRequest {
    /// Its position in `security_context.secrets`.
    pub index: usize,
    /// The group (flytekit: a Kubernetes secret's name, a Secrets Manager secret's name).
    pub group: String,
    /// The group's version, if any.
    pub group_version: String,
    /// The key within the group.
    pub key: String,
    /// How the task wants it.
    pub mount: MountType,
    /// The variable the task reads it from (`ENV_VAR`/`ANY`: the value; `FILE`: a path), if named.
    pub env_var: String,
}

impl SecretRequest {
    /// `group/key` (or `key`), as messages name it.
    pub fn label(&self) -> String {
        [&self.group, &self.group_version, &self.key]
            .into_iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The field of the template that asks for it.
    pub fn field(&self) -> String {
        format!("security_context.secrets[{}]", self.index)
    }

    /// The variable flytekit's lookup reads, with `prefix` (flytekit's default: [`ENV_PREFIX`]).
    pub fn env_name(&self, prefix: &str) -> String {
        let parts: Vec<String> = [&self.group, &self.group_version, &self.key]
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.to_uppercase())
            .collect();
        format!("{prefix}{}", parts.join("_"))
    }

    /// The file flytekit's lookup reads under `dir`, with `file_prefix` before the key.
    pub fn file_in(&self, dir: &Path, file_prefix: &str) -> PathBuf {
        let mut p = dir.to_path_buf();
        for part in [&self.group, &self.group_version] {
            if !part.is_empty() {
                p.push(part.to_lowercase());
            }
        }
        p.push(format!("{file_prefix}{}", self.key.to_lowercase()));
        p
    }

    /// Whether the task wants a file (the path in [`SecretRequest::env_var`]) rather than the value.
    pub fn wants_file(&self) -> bool {
        self.mount == MountType::File
    }
}

/// The secrets `template` asks for, in order.
pub fn requests(template: &TaskTemplate) -> Vec<SecretRequest> {
    template
        .security_context
        .iter()
        .flat_map(|s| s.secrets.iter())
        .enumerate()
        .map(|(index, s)| SecretRequest {
            index,
            group: s.group.clone(),
            group_version: s.group_version.clone(),
            key: s.key.clone(),
            mount: MountType::try_from(s.mount_requirement).unwrap_or(MountType::Any),
            env_var: s.env_var.clone(),
        })
        .collect()
}

/// The failure of an attempt of `task` whose secret `r` could not be found (`why`: the service's
/// answer): a missing secret is the user's to fix and is not retried; anything else is retried when
/// `passing` (a service that could not be reached).
pub fn lookup_failed(
    task: &str,
    r: &SecretRequest,
    missing: bool,
    passing: bool,
    why: impl std::fmt::Display,
) -> updraft_engine::exec::TaskStatus {
    use updraft_engine::exec::ErrorKind;
    let what = format!("task `{task}`: secret {} ({})", r.label(), r.field());
    if missing {
        crate::failed(
            "SecretMissing",
            format!("{what}: no Secrets Manager secret `{}`: {why}", r.group),
            ErrorKind::User,
            false,
        )
    } else if passing {
        crate::failed(
            "SecretLookup",
            format!("{what}: {why}"),
            ErrorKind::System,
            true,
        )
    } else {
        crate::failed(
            "SecretLookup",
            format!("{what}: {why}"),
            ErrorKind::User,
            false,
        )
    }
}

/// For a connector that gives secrets as variables only (`service` says whose): a problem for each
/// request that wants the path of a file in its `env_var`.
pub fn file_paths_refused(template: &TaskTemplate, service: &str) -> Vec<crate::Problem> {
    requests(template)
        .iter()
        .filter(|r| r.wants_file() && !r.env_var.is_empty())
        .map(|r| crate::Problem {
            field: r.field(),
            reason: format!(
                "secret {}: {service} gets secrets as variables only, so `{}` cannot hold the path of \
                 a file (ask for the value: mount_requirement ENV_VAR or ANY)",
                r.label(),
                r.env_var
            ),
        })
        .collect()
}

/// For a connector that cannot give a task its secrets: a problem for each secret the task asks for,
/// saying `why`, so the workflow is refused before anything starts instead of the task failing later.
pub fn unsupported(template: &TaskTemplate, why: &str) -> Vec<crate::Problem> {
    requests(template)
        .iter()
        .map(|r| crate::Problem {
            field: r.field(),
            reason: format!("secret {}: {why}", r.label()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(group: &str, version: &str, key: &str) -> SecretRequest {
        SecretRequest {
            index: 0,
            group: group.into(),
            group_version: version.into(),
            key: key.into(),
            mount: MountType::Any,
            env_var: String::new(),
        }
    }

    #[test]
    fn names_follow_flytekit() {
        let r = req("db-creds", "", "Password");
        assert_eq!(r.env_name(ENV_PREFIX), "_FSEC_DB-CREDS_PASSWORD");
        assert_eq!(
            r.file_in(Path::new("/etc/secrets"), ""),
            Path::new("/etc/secrets/db-creds/password")
        );
        let v = req("Db", "V2", "key");
        assert_eq!(v.env_name("P_"), "P_DB_V2_KEY");
        assert_eq!(
            v.file_in(Path::new("/s"), "f-"),
            Path::new("/s/db/v2/f-key")
        );
        assert_eq!(v.label(), "Db/V2/key");
        assert_eq!(req("", "", "k").label(), "k");
    }
}
