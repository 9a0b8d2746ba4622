//! Python tasks' pods under a wrapper: the primary container of a pod whose program is flytekit's
//! (`pyflyte-execute`, `pyflyte-fast-execute`, `pyflyte-map-execute`) runs `python3 -c WRAPPER <its
//! command…>`, which
//!
//! - writes the attempt's inputs from the pod's environment (`UPDRAFT_INPUTS`, base64) to a local file
//!   and puts that file's path in place of the argument naming the inputs' URI (`UPDRAFT_INPUTS_URI`),
//!   so small inputs need no object in the bucket;
//! - runs the command, passing on `SIGTERM` and `SIGINT`, and once it exits sends the runtime's end
//!   signal (`UPDRAFT_END_SIGNAL`, an [`EndSignal`] as JSON) to its queue with botocore, which every
//!   flytekit image has (through s3fs), with the pod's own AWS identity (the client is made while the
//!   command runs, so the signal leaves as it exits); a signal that cannot be sent is logged and the
//!   runtime sees the end at its next sweep;
//! - exits with the command's exit code (128 + the signal's number when a signal ended it).
//!
//! Variables the wrapper reads are removed from the task's environment before the command starts.
//!
//! A raw container's pod needs no wrapper: the copilot takes the same variables (`UPDRAFT_INPUTS` in
//! its init container, `UPDRAFT_END_SIGNAL` where it runs the command; see `updraft-copilot`).

use base64::Engine;
use k8s_openapi::api::core::v1::{Container, Pod};
use updraft_connector::{Attempt, EndSignal};
use updraft_proto::Message;

use crate::pod::{ANNOTATION_PRIMARY, env};

/// Inputs up to this size (encoded) travel in the pod's environment by default.
pub const INLINE_INPUTS_MAX: usize = 16 * 1024;

/// The variable holding the inputs (base64 of the `LiteralMap`).
pub const INPUTS_VAR: &str = "UPDRAFT_INPUTS";
/// The variable naming the URI the command's arguments give for the inputs.
pub const INPUTS_URI_VAR: &str = "UPDRAFT_INPUTS_URI";
/// The variable holding the end signal ([`EndSignal`] as JSON).
pub const SIGNAL_VAR: &str = "UPDRAFT_END_SIGNAL";

/// What a wrapped container runs: `python3 -c WRAPPER <command…>`.
pub const WRAPPER: &str = r#"import base64, json, os, signal, subprocess, sys, tempfile
args = sys.argv[1:]
inputs = os.environ.pop("UPDRAFT_INPUTS", None)
uri = os.environ.pop("UPDRAFT_INPUTS_URI", "")
if inputs is not None:
    path = os.path.join(tempfile.mkdtemp(prefix="updraft-"), "inputs.pb")
    with open(path, "wb") as f:
        f.write(base64.b64decode(inputs))
    args = [path if a == uri else a for a in args]
end = os.environ.pop("UPDRAFT_END_SIGNAL", None)
if not end:
    os.execvp(args[0], args)
child = subprocess.Popen(args)
for s in (signal.SIGTERM, signal.SIGINT):
    signal.signal(s, lambda n, _f: child.send_signal(n))
try:
    import botocore.session
    e = json.loads(end)
    sqs = botocore.session.get_session().create_client("sqs", region_name=e["region"] or None)
except Exception as x:
    sqs, failed = None, x
code = child.wait()
try:
    if sqs is None:
        raise failed
    sqs.send_message(QueueUrl=e["queue"], MessageBody=e["body"], DelaySeconds=e["delay"])
except Exception as x:
    print(f"updraft: could not tell the runtime that the task ended ({type(x).__name__}: {x}); "
          "it will see the end at its next check", file=sys.stderr)
sys.exit(code if code >= 0 else 128 - code)
"#;

/// Whether a container's program is flytekit's entrypoint (`pyflyte-…`), found as the first word of
/// its command and arguments.
fn runs_flytekit(c: &Container) -> bool {
    let program = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .next();
    program.is_some_and(|p| {
        p.rsplit('/')
            .next()
            .is_some_and(|name| name.starts_with("pyflyte-"))
    })
}

/// The index of `pod`'s primary container when it runs flytekit.
pub fn python_primary(pod: &Pod) -> Option<usize> {
    let name = pod.metadata.annotations.as_ref()?.get(ANNOTATION_PRIMARY)?;
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .position(|c| &c.name == name)
        .filter(|&i| runs_flytekit(&spec.containers[i]))
}

/// The index of `pod`'s primary container when it runs under the copilot (a raw container), and that
/// of the copilot's init container, which writes the inputs.
fn copilot(pod: &Pod) -> Option<(usize, usize)> {
    let spec = pod.spec.as_ref()?;
    let program = format!("{}/updraft-copilot", crate::pod::COPILOT_DIR);
    let primary = spec
        .containers
        .iter()
        .position(|c| c.command.as_ref().and_then(|c| c.first()) == Some(&program))?;
    let init = spec
        .init_containers
        .as_ref()?
        .iter()
        .position(|c| c.name == crate::pod::COPILOT_INIT)?;
    Some((primary, init))
}

/// Whether `pod` can be wrapped: a Python task's or a raw container's.
pub fn wraps(pod: &Pod) -> bool {
    python_primary(pod).is_some() || copilot(pod).is_some()
}

/// Whether `a`'s inputs fit the environment (`max` bytes encoded).
pub fn inputs_fit(a: &Attempt<'_>, max: usize) -> bool {
    a.launch.inputs.encoded_len() <= max
}

/// Wraps `pod` when it runs a Python task (its primary container under the wrapper) or a raw
/// container (the copilot, which knows the same variables): its inputs in its environment when
/// `inline`, the end signal when there is one. True when it was wrapped.
pub fn wrap(pod: &mut Pod, a: &Attempt<'_>, inline: bool, signal: Option<&EndSignal>) -> bool {
    if !inline && signal.is_none() {
        return false;
    }
    let inputs = inline
        .then(|| base64::engine::general_purpose::STANDARD.encode(a.launch.inputs.encode_to_vec()));
    // An `EndSignal` is strings and numbers: it always serializes.
    let signal = signal.map(|s| serde_json::to_string(s).unwrap_or_default());
    let python = python_primary(pod);
    let raw = copilot(pod);
    let Some(spec) = pod.spec.as_mut() else {
        return false;
    };
    let set = |c: &mut Container, vars: &[(&str, &Option<String>)]| {
        let all = c.env.get_or_insert_with(Vec::new);
        all.retain(|v| ![INPUTS_VAR, INPUTS_URI_VAR, SIGNAL_VAR].contains(&v.name.as_str()));
        for (name, value) in vars {
            if let Some(v) = value {
                all.push(env(name, v));
            }
        }
    };
    if let Some(i) = python {
        let c = &mut spec.containers[i];
        let mut args: Vec<String> = c.command.take().unwrap_or_default();
        args.extend(c.args.take().unwrap_or_default());
        c.command = Some(vec!["python3".into(), "-c".into(), WRAPPER.into()]);
        c.args = Some(args);
        let uri = inline.then(|| a.paths.input.clone());
        set(
            c,
            &[
                (INPUTS_VAR, &inputs),
                (INPUTS_URI_VAR, &uri),
                (SIGNAL_VAR, &signal),
            ],
        );
        return true;
    }
    if let Some((primary, init)) = raw {
        set(&mut spec.containers[primary], &[(SIGNAL_VAR, &signal)]);
        if let Some(c) = spec.init_containers.as_mut().and_then(|c| c.get_mut(init)) {
            set(c, &[(INPUTS_VAR, &inputs)]);
        }
        return true;
    }
    false
}
