//! The local registry: `updraft register <files…>` without `--stack` keeps each file under
//! `<state-dir>/registry/packages/` and records every task, workflow and launch plan it defines by kind,
//! name and version in `<state-dir>/registry/index.json`. Reference tasks and launch plans
//! (`@reference_task`, `@reference_launch_plan`) of the packages `run` and `validate` are given resolve
//! against it, as Flyte resolves them against what is registered: by name and, when the reference names
//! one (flytekit's always do), by version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use updraft_engine::{EntityRef, Package, Problems, Reference};

/// One registered entity.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// `task`, `workflow` or `launch plan`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// The version it was registered at.
    pub version: String,
    /// Its package, relative to the registry folder.
    pub package: String,
    /// When, in milliseconds since the epoch.
    pub registered: u64,
}

/// What `index.json` holds.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Index {
    /// Every registration, oldest first.
    pub entries: Vec<Entry>,
}

/// The registry under a state folder.
pub struct Registry {
    dir: PathBuf,
    index: Index,
    loaded: BTreeMap<String, Package>,
}

impl Registry {
    /// Opens the registry of `state_dir` (an empty one when nothing was registered there).
    pub fn open(state_dir: &Path) -> anyhow::Result<Registry> {
        let dir = state_dir.join("registry");
        let path = dir.join("index.json");
        let index = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: not a registry index", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
        };
        Ok(Registry {
            dir,
            index,
            loaded: BTreeMap::new(),
        })
    }

    /// The package that holds what `r` refers to, with where it is kept: the registration of its
    /// version (the latest, when it names none); `None` when nothing of that kind and name is
    /// registered; an error saying which versions are, when its version is not.
    fn lookup(&mut self, r: &Reference) -> Result<Option<(PathBuf, Package)>, String> {
        let kind = r.entity.kind.label();
        let same: Vec<&Entry> = self
            .index
            .entries
            .iter()
            .filter(|e| e.kind == kind && e.name == r.entity.name)
            .collect();
        let Some(entry) = pick_version(r, &same, |e| &e.version, "")? else {
            return Ok(None);
        };
        let package = entry.package.clone();
        let path = self.dir.join(&package);
        if let Some(p) = self.loaded.get(&package) {
            return Ok(Some((path, p.clone())));
        }
        let pkg = crate::load::load(std::slice::from_ref(&path)).map_err(|p| {
            format!(
                "{} is registered in {}, which no longer loads: {p}",
                r.describe(),
                path.display()
            )
        })?;
        self.loaded.insert(package, pkg.clone());
        Ok(Some((path, pkg)))
    }

    /// Resolves the references of `roots` (every entity when `None`) in `pkg`; says on stderr where
    /// each resolved one came from. Unresolved references are problems.
    pub fn resolve(
        &mut self,
        pkg: &mut Package,
        roots: Option<&[EntityRef]>,
    ) -> Result<(), Problems> {
        let mut from: BTreeMap<String, PathBuf> = BTreeMap::new();
        let (resolved, problems) = pkg.resolve(roots, |r| {
            Ok(self.lookup(r)?.map(|(path, found)| {
                from.insert(r.describe(), path);
                found
            }))
        });
        for r in resolved {
            let at = from.get(&r.describe()).map(|p| p.display().to_string());
            eprintln!(
                "updraft: {} resolved from the registry ({})",
                r.describe(),
                at.unwrap_or_default()
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Problems(problems))
        }
    }

    fn save(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("{}: cannot create", self.dir.display()))?;
        let path = self.dir.join("index.json");
        let tmp = self.dir.join("index.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.index)?)
            .with_context(|| format!("{}: cannot write", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("{}: cannot write", path.display()))
    }
}

/// Of `registered` (the registrations of `r`'s entity, oldest first), the one `r` resolves to: the one
/// at its version, the latest when it names none; `None` when there are none; when none is at its
/// version, an error listing those there are (`place`, e.g. ` on the stack`, says where).
pub fn pick_version<'a, T>(
    r: &Reference,
    registered: &'a [T],
    version_of: impl Fn(&T) -> &String,
    place: &str,
) -> Result<Option<&'a T>, String> {
    if registered.is_empty() {
        return Ok(None);
    }
    let found = if r.version.is_empty() {
        registered.last()
    } else {
        registered
            .iter()
            .rev()
            .find(|e| *version_of(e) == r.version)
    };
    match found {
        Some(e) => Ok(Some(e)),
        None => {
            let versions: Vec<&str> = registered.iter().map(|e| version_of(e).as_str()).collect();
            Err(format!(
                "{} is registered{place} ({}), but not at version {} (register it with --version {})",
                r.entity,
                versions.join(", "),
                r.version,
                r.version
            ))
        }
    }
}

/// The packages that hold the latest registration of each workflow and launch plan under
/// `state_dir`, each once.
pub fn packages(state_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let registry = Registry::open(state_dir)?;
    let mut latest: BTreeMap<(&str, &str), &Entry> = BTreeMap::new();
    for e in &registry.index.entries {
        if e.kind == "workflow" || e.kind == "launch plan" {
            latest.insert((&e.kind, &e.name), e);
        }
    }
    let mut out: Vec<PathBuf> = latest
        .values()
        .map(|e| registry.dir.join(&e.package))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// `updraft register <files…>` (no `--stack`): the files, taken together, resolve their references
/// against what is registered and must compile; then each is kept in the registry and its entities
/// recorded at `version` (default: the file's digest). Prints one line per entity.
pub fn register(
    state_dir: &Path,
    files: &[PathBuf],
    version: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let mut registry = Registry::open(state_dir)?;
    let mut all = match crate::load::load(files) {
        Ok(p) => p,
        Err(p) => return Ok(crate::report(&p)),
    };
    if let Err(p) = registry.resolve(&mut all, None) {
        return Ok(crate::report(&p));
    }
    if let Err(p) = updraft_engine::compile(&all) {
        return Ok(crate::report(&p));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let packages = registry.dir.join("packages");
    std::fs::create_dir_all(&packages)
        .with_context(|| format!("{}: cannot create", packages.display()))?;
    for f in files {
        let bytes = std::fs::read(f).with_context(|| format!("{}: cannot read", f.display()))?;
        let hex = updraft_aws::short_digest(&bytes);
        let file = f
            .file_name()
            .and_then(|n| n.to_str())
            .context("a file without a name")?;
        let kept = match file.rsplit_once('.') {
            Some((stem, ext)) => format!("packages/{stem}-{hex}.{ext}"),
            None => format!("packages/{file}-{hex}"),
        };
        std::fs::write(registry.dir.join(&kept), &bytes)
            .with_context(|| format!("{}: cannot write", registry.dir.join(&kept).display()))?;
        let version = version.map_or_else(|| hex.clone(), str::to_string);
        let pkg = crate::load::load(std::slice::from_ref(f)).map_err(|p| anyhow::anyhow!("{p}"))?;
        for e in pkg.entities() {
            let kind = e.kind.label().to_string();
            registry
                .index
                .entries
                .retain(|x| !(x.kind == kind && x.name == e.name && x.version == version));
            registry.index.entries.push(Entry {
                kind,
                name: e.name.clone(),
                version: version.clone(),
                package: kept.clone(),
                registered: now,
            });
            out!("{} {} {version}", e.kind.label(), e.name);
        }
        eprintln!(
            "updraft: {} → {}",
            f.display(),
            registry.dir.join(&kept).display()
        );
    }
    registry.save()?;
    Ok(ExitCode::SUCCESS)
}
