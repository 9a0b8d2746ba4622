//! Packages: the entities of a `pyflyte package` .tgz (or of a YAML file), decoded and indexed by name.
//!
//! Decoding works on bytes already in memory and never panics: a truncated or corrupt archive or entry,
//! an unexpected file name, an entry or archive over the size limits, or a duplicate entity is a
//! [`Problem`] naming the file and the entry.

use std::collections::BTreeMap;
use std::io::Read;

use updraft_proto::Message;
use updraft_proto::admin::{LaunchPlan, TaskSpec, WorkflowSpec};
use updraft_proto::core::{TaskTemplate, WorkflowTemplate};

use crate::error::{Problem, Problems};

/// Limits that keep a hostile or broken package from exhausting memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest compressed archive accepted, in bytes.
    pub max_archive_bytes: u64,
    /// Largest single entry, uncompressed, in bytes.
    pub max_entry_bytes: u64,
    /// Largest total of all entries, uncompressed, in bytes.
    pub max_total_bytes: u64,
    /// Most entries in one archive.
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_archive_bytes: 256 << 20,
            max_entry_bytes: 64 << 20,
            max_total_bytes: 1 << 30,
            max_entries: 100_000,
        }
    }
}

/// Where an entity came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The package or YAML file.
    pub file: String,
    /// The entry inside a package, if any.
    pub entry: Option<String>,
}

impl Origin {
    /// `file` or `file!entry`, as problems print it.
    pub fn display(&self) -> String {
        match &self.entry {
            Some(e) => format!("{}!{}", self.file, e),
            None => self.file.clone(),
        }
    }
}

/// A task with where it came from.
#[derive(Debug, Clone)]
pub struct TaskEntity {
    /// The task template.
    pub template: TaskTemplate,
    /// Source of the entity.
    pub origin: Origin,
}

/// A workflow template with where it came from.
#[derive(Debug, Clone)]
pub struct WorkflowEntity {
    /// The workflow template.
    pub template: WorkflowTemplate,
    /// Source of the entity.
    pub origin: Origin,
}

/// A launch plan with where it came from.
#[derive(Debug, Clone)]
pub struct LaunchPlanEntity {
    /// The launch plan.
    pub launch_plan: LaunchPlan,
    /// Source of the entity.
    pub origin: Origin,
}

/// The entities of one or more packages, by name.
#[derive(Debug, Clone, Default)]
pub struct Package {
    /// Tasks by name.
    pub tasks: BTreeMap<String, TaskEntity>,
    /// Workflows (top-level and subworkflows) by name.
    pub workflows: BTreeMap<String, WorkflowEntity>,
    /// Launch plans by name.
    pub launch_plans: BTreeMap<String, LaunchPlanEntity>,
    /// Workflows that appeared as a top-level `_2.pb` (not only as someone's subworkflow), in load order.
    pub top_level: Vec<String>,
    /// Code bundles of fast-registered packages (`fast<digest>.tar.gz`): entry name and bytes. The
    /// registrar uploads them and fills in `{{ .remote_package_path }}`.
    pub code_bundles: Vec<(String, Vec<u8>)>,
}

/// The kind of a package entry, from the digit before `.pb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Task,
    Workflow,
    LaunchPlan,
}

fn entry_kind(name: &str) -> Option<EntryKind> {
    let base = name.rsplit('/').next().unwrap_or(name);
    let stem = base.strip_suffix(".pb")?;
    match stem.rsplit_once('_')?.1 {
        "1" => Some(EntryKind::Task),
        "2" => Some(EntryKind::Workflow),
        "3" => Some(EntryKind::LaunchPlan),
        _ => None,
    }
}

impl Package {
    /// Decodes stored package bytes by their name: `.yaml`/`.yml` as Updraft YAML, anything else as a
    /// `pyflyte package` archive.
    pub fn decode(file: &str, bytes: &[u8], limits: Limits) -> Result<Package, Problems> {
        if file.ends_with(".yaml") || file.ends_with(".yml") {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| Problems(vec![Problem::file(file, "is not UTF-8 text")]))?;
            crate::yaml::load(file, text)
        } else {
            Package::from_tgz(file, bytes, limits)
        }
    }

    /// Decodes a `pyflyte package` archive (gzip-compressed tar of `NN_<name>_<k>.pb` files).
    pub fn from_tgz(file: &str, bytes: &[u8], limits: Limits) -> Result<Package, Problems> {
        if bytes.len() as u64 > limits.max_archive_bytes {
            return Err(Problem::file(
                file,
                format!(
                    "archive is {} bytes, over the {} byte limit",
                    bytes.len(),
                    limits.max_archive_bytes
                ),
            )
            .into());
        }
        if bytes.len() < 2 || bytes[0] != 0x1f || bytes[1] != 0x8b {
            return Err(Problem::file(
                file,
                "not a .tgz package: the file does not start with the gzip magic bytes",
            )
            .into());
        }
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
        let entries = archive
            .entries()
            .map_err(|e| Problem::file(file, format!("cannot read archive: {e}")))?;
        let mut pkg = Package::default();
        let mut problems = Vec::new();
        let mut total = 0u64;
        let mut count = 0usize;
        for entry in entries {
            let mut entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    problems.push(Problem::file(file, format!("corrupt archive: {e}")));
                    break;
                }
            };
            count += 1;
            if count > limits.max_entries {
                problems.push(Problem::file(
                    file,
                    format!("more than {} entries", limits.max_entries),
                ));
                break;
            }
            let name = match entry.path() {
                Ok(p) => p.to_string_lossy().into_owned(),
                Err(e) => {
                    problems.push(Problem::file(file, format!("bad entry name: {e}")));
                    continue;
                }
            };
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let origin = Origin {
                file: file.to_string(),
                entry: Some(name.clone()),
            };
            let is_bundle = {
                let base = name.rsplit('/').next().unwrap_or(&name);
                base.starts_with("fast") && base.ends_with(".tar.gz")
            };
            let kind = entry_kind(&name);
            if kind.is_none() && !is_bundle {
                problems.push(Problem::file(
                    origin.display(),
                    "unexpected entry: package entries are named NN_<name>_<1|2|3>.pb (or fast<digest>.tar.gz)",
                ));
                continue;
            }
            let size = entry.header().size().unwrap_or(u64::MAX);
            if size > limits.max_entry_bytes {
                problems.push(Problem::file(
                    origin.display(),
                    format!(
                        "entry is {size} bytes, over the {} byte limit",
                        limits.max_entry_bytes
                    ),
                ));
                break;
            }
            let mut buf = Vec::with_capacity(size.min(1 << 20) as usize);
            if let Err(e) = (&mut entry)
                .take(limits.max_entry_bytes + 1)
                .read_to_end(&mut buf)
            {
                problems.push(Problem::file(
                    origin.display(),
                    format!("corrupt entry: {e}"),
                ));
                break;
            }
            total += buf.len() as u64;
            if total > limits.max_total_bytes {
                problems.push(Problem::file(
                    file,
                    format!(
                        "entries total over the {} byte limit",
                        limits.max_total_bytes
                    ),
                ));
                break;
            }
            match kind {
                Some(kind) => {
                    if let Err(p) = pkg.add_encoded(kind, &buf, origin) {
                        problems.push(p);
                    }
                }
                None => pkg.code_bundles.push((name, buf)),
            }
        }
        // Read to the end so gzip's trailer (CRC and length) is checked: a cut archive is an error.
        if problems.is_empty() {
            let mut rest = archive.into_inner().take(limits.max_archive_bytes);
            if let Err(e) = std::io::copy(&mut rest, &mut std::io::sink()) {
                problems.push(Problem::file(
                    file,
                    format!("corrupt or truncated archive: {e}"),
                ));
            }
        }
        if problems.is_empty() && count == 0 {
            problems.push(Problem::file(file, "the package has no entries"));
        }
        Problems(problems).into_result(pkg)
    }

    fn add_encoded(&mut self, kind: EntryKind, buf: &[u8], origin: Origin) -> Result<(), Problem> {
        let what = match kind {
            EntryKind::Task => "flyteidl.admin.TaskSpec",
            EntryKind::Workflow => "flyteidl.admin.WorkflowSpec",
            EntryKind::LaunchPlan => "flyteidl.admin.LaunchPlan",
        };
        let bad = |e: updraft_proto::DecodeError| {
            Problem::file(
                origin.display(),
                format!("not a valid {what} (truncated or corrupt protobuf): {e}"),
            )
        };
        match kind {
            EntryKind::Task => {
                let spec = TaskSpec::decode(buf).map_err(bad)?;
                let template = spec.template.unwrap_or_default();
                self.add_task(template, origin)
            }
            EntryKind::Workflow => {
                let spec = WorkflowSpec::decode(buf).map_err(bad)?;
                self.add_workflow_spec(spec, origin)
            }
            EntryKind::LaunchPlan => {
                let lp = LaunchPlan::decode(buf).map_err(bad)?;
                self.add_launch_plan(lp, origin)
            }
        }
    }

    /// Adds a task; its id must have a name, and no other task may have it.
    pub fn add_task(&mut self, template: TaskTemplate, origin: Origin) -> Result<(), Problem> {
        let name = entity_name(template.id.as_ref(), &origin, "task", "id.name")?;
        insert_unique(
            &mut self.tasks,
            name,
            TaskEntity { template, origin },
            "task",
            |t| &t.origin,
        )
    }

    /// Adds a workflow spec: the template (top level) and its subworkflows.
    pub fn add_workflow_spec(&mut self, spec: WorkflowSpec, origin: Origin) -> Result<(), Problem> {
        let template = spec.template.unwrap_or_default();
        let name = entity_name(
            template.id.as_ref(),
            &origin,
            "workflow",
            "template.id.name",
        )?;
        for sub in spec.sub_workflows {
            let sub_name = entity_name(
                sub.id.as_ref(),
                &origin,
                "workflow",
                "sub_workflows.id.name",
            )?;
            // The same subworkflow is repeated in every spec that uses it: the copies must agree.
            match self.workflows.get(&sub_name) {
                Some(prev) if prev.template != sub => {
                    return Err(differ(&origin, &sub_name, &prev.origin));
                }
                Some(_) => {}
                None => {
                    self.workflows.insert(
                        sub_name,
                        WorkflowEntity {
                            template: sub,
                            origin: origin.clone(),
                        },
                    );
                }
            }
        }
        if self.top_level.contains(&name) {
            let prev = &self.workflows[&name].origin;
            return Err(dup(&origin, "workflow", &name, prev));
        }
        if let Some(prev) = self.workflows.get(&name)
            && prev.template != template
        {
            return Err(differ(&origin, &name, &prev.origin));
        }
        self.top_level.push(name.clone());
        self.workflows
            .insert(name, WorkflowEntity { template, origin });
        Ok(())
    }

    /// Adds a launch plan; its id must have a name, and no other launch plan may have it.
    pub fn add_launch_plan(
        &mut self,
        launch_plan: LaunchPlan,
        origin: Origin,
    ) -> Result<(), Problem> {
        let name = entity_name(launch_plan.id.as_ref(), &origin, "launch plan", "id.name")?;
        let entity = LaunchPlanEntity {
            launch_plan,
            origin,
        };
        insert_unique(&mut self.launch_plans, name, entity, "launch plan", |l| {
            &l.origin
        })
    }

    /// Adds every entity of `other`; a name defined in both is a problem.
    pub fn merge(&mut self, other: Package) -> Result<(), Problems> {
        let mut problems = Vec::new();
        for (name, t) in other.tasks {
            if let Err(p) = insert_unique(&mut self.tasks, name, t, "task", |t| &t.origin) {
                problems.push(p);
            }
        }
        for (name, w) in other.workflows {
            let top = other.top_level.contains(&name);
            match self.workflows.get(&name) {
                Some(prev) if top && self.top_level.contains(&name) => {
                    problems.push(dup(&w.origin, "workflow", &name, &prev.origin))
                }
                Some(_) => {}
                None => {
                    self.workflows.insert(name.clone(), w);
                }
            }
            if top && !self.top_level.contains(&name) {
                self.top_level.push(name);
            }
        }
        self.code_bundles.extend(other.code_bundles);
        for (name, lp) in other.launch_plans {
            if let Err(p) = insert_unique(&mut self.launch_plans, name, lp, "launch plan", |l| {
                &l.origin
            }) {
                problems.push(p);
            }
        }
        Problems(problems).into_result(())
    }
}

/// The name of an entity, which must not be empty.
fn entity_name(
    id: Option<&updraft_proto::core::Identifier>,
    origin: &Origin,
    kind: &str,
    field: &str,
) -> Result<String, Problem> {
    match id.map(|i| i.name.as_str()) {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(field_problem(
            origin,
            kind,
            field,
            &format!("a {kind} needs a name"),
        )),
    }
}

/// Inserts `value` under `name` unless the name is taken (then: a "defined twice" problem).
fn insert_unique<T>(
    map: &mut BTreeMap<String, T>,
    name: String,
    value: T,
    kind: &str,
    origin_of: impl Fn(&T) -> &Origin,
) -> Result<(), Problem> {
    if let Some(prev) = map.get(&name) {
        return Err(dup(origin_of(&value), kind, &name, origin_of(prev)));
    }
    map.insert(name, value);
    Ok(())
}

impl Package {
    /// The package as a `pyflyte package` archive that decodes to the same entities: each task a
    /// `TaskSpec`, each top-level workflow a `WorkflowSpec` (the other workflows as the first one's
    /// subworkflows, last, so the last top-level workflow stays the default), each launch plan as it
    /// came, and the code bundles.
    pub fn to_archive(&self) -> std::io::Result<Vec<u8>> {
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        let mut n = 0usize;
        let mut entry = |name: &str, kind: u8, bytes: Vec<u8>, entries: &mut Vec<_>| {
            n += 1;
            entries.push((format!("{n:04}_{}_{kind}.pb", file_safe(name)), bytes));
        };
        for (name, t) in &self.tasks {
            let spec = TaskSpec {
                template: Some(t.template.clone()),
                ..Default::default()
            };
            entry(name, 1, spec.encode_to_vec(), &mut entries);
        }
        let mut subs: Vec<WorkflowTemplate> = self
            .workflows
            .iter()
            .filter(|(name, _)| !self.top_level.contains(name))
            .map(|(_, w)| w.template.clone())
            .collect();
        if !self
            .top_level
            .iter()
            .any(|w| self.workflows.contains_key(w))
        {
            // No top-level workflow to carry them: each its own spec.
            for w in std::mem::take(&mut subs) {
                let name = w.id.as_ref().map(|i| i.name.clone()).unwrap_or_default();
                let spec = WorkflowSpec {
                    template: Some(w),
                    ..Default::default()
                };
                entry(&name, 2, spec.encode_to_vec(), &mut entries);
            }
        }
        let tops = self
            .top_level
            .iter()
            .filter(|w| self.workflows.contains_key(*w));
        for (i, name) in tops.enumerate() {
            let w = &self.workflows[name];
            let spec = WorkflowSpec {
                template: Some(w.template.clone()),
                sub_workflows: if i == 0 {
                    std::mem::take(&mut subs)
                } else {
                    Vec::new()
                },
                ..Default::default()
            };
            entry(name, 2, spec.encode_to_vec(), &mut entries);
        }
        for (name, lp) in &self.launch_plans {
            entry(name, 3, lp.launch_plan.encode_to_vec(), &mut entries);
        }
        entries.extend(self.code_bundles.iter().cloned());
        write_archive(&entries)
    }
}

/// `name` as part of a file name: every character but ASCII letters, digits, `.` and `-` becomes `_`.
pub fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes entries (name, bytes) as a gzip-compressed tar, the layout `pyflyte package` uses.
pub fn write_archive(entries: &[(String, Vec<u8>)]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::default());
    let mut builder = tar::Builder::new(gz);
    for (name, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, &data[..])?;
    }
    builder.into_inner()?.finish()?;
    Ok(out)
}

fn field_problem(origin: &Origin, entity: &str, field: &str, reason: &str) -> Problem {
    Problem {
        file: origin.display(),
        entity: entity.to_string(),
        node: None,
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

fn differ(origin: &Origin, name: &str, prev: &Origin) -> Problem {
    Problem {
        file: origin.display(),
        entity: format!("workflow {name}"),
        node: None,
        field: "template".into(),
        reason: format!("differs from the copy in {}", prev.display()),
    }
}

fn dup(origin: &Origin, kind: &str, name: &str, prev: &Origin) -> Problem {
    Problem {
        file: origin.display(),
        entity: format!("{kind} {name}"),
        node: None,
        field: "id.name".into(),
        reason: format!("defined twice (also in {})", prev.display()),
    }
}
