//! The copilot's S3 data against LocalStack's S3: objects, files and folders both ways (large files in
//! parts), keys that would leave their folder refused, and the program moving a raw container's data
//! from and to `s3://` as it does in a pod of the serverless runtime.
//!
//! Needs `UPDRAFT_TEST_LOCALSTACK` (`scripts/test` sets it).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use updraft_copilot::s3::S3;
use updraft_copilot::{CopilotError, Store, encode_interface};
use updraft_engine::exec::TaskStatus;
use updraft_engine::exec::outcome::{OutputFiles, from_output_files};
use updraft_engine::literal;
use updraft_proto::Message;
use updraft_proto::core::LiteralMap;

use common::{dir, variables};

fn endpoint() -> String {
    std::env::var("UPDRAFT_TEST_LOCALSTACK").unwrap_or_else(|_| {
        panic!(
            "UPDRAFT_TEST_LOCALSTACK is not set: run the tests with `bash scripts/test`, which starts \
             LocalStack (localstack/up) and passes its endpoint"
        )
    })
}

/// An S3 store on LocalStack with 5 MiB parts (S3's smallest), a new bucket named after `tag`, and the
/// ETag of an object in it (`<md5 of the parts' md5s>-<parts>` for one uploaded in parts).
fn store(tag: &str) -> (S3, String, impl Fn(&str) -> String) {
    let endpoint = endpoint();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sdk = rt.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .load(),
    );
    let s3 = S3::new(&sdk).unwrap().with_part_size(5 * 1024 * 1024);
    let bucket = format!("copilot-{tag}-{}", std::process::id());
    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    rt.block_on(client.create_bucket().bucket(&bucket).send())
        .unwrap_or_else(|e| panic!("create bucket: {e:?}"));
    let b = bucket.clone();
    let etag = move |key: &str| {
        let head = rt
            .block_on(client.head_object().bucket(&b).key(key).send())
            .unwrap();
        head.e_tag()
            .unwrap_or_default()
            .trim_matches('"')
            .to_string()
    };
    (s3, bucket, etag)
}

/// The files under `dir` with their contents, by relative path.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn objects_files_and_folders_go_both_ways() {
    let (s3, bucket, etag) = store("moves");
    let d = dir("moves");
    let at = |k: &str| format!("s3://{bucket}/{k}");

    s3.write(&at("a/inputs.pb"), b"bytes").unwrap();
    assert_eq!(s3.read(&at("a/inputs.pb")).unwrap(), b"bytes");
    let missing = s3.read(&at("a/none")).unwrap_err().to_string();
    assert!(missing.contains("no such object"), "{missing}");
    assert!(missing.contains("a/none"), "{missing}");

    // A folder: nested files up and down again, and a single file.
    let src = d.join("src");
    std::fs::create_dir_all(src.join("part/deeper")).unwrap();
    std::fs::write(src.join("one.csv"), "a,b\n1,2\n").unwrap();
    std::fs::write(src.join("part/two.txt"), "two").unwrap();
    std::fs::write(src.join("part/deeper/three"), [0u8, 1, 2, 255]).unwrap();
    s3.upload(&src, &at("raw/folder")).unwrap();
    s3.download(&at("raw/folder"), true, &d.join("back"))
        .unwrap();
    assert_eq!(tree(&d.join("back")), tree(&src));
    assert_eq!(tree(&src).len(), 3);
    s3.upload(&src.join("one.csv"), &at("raw/one.csv")).unwrap();
    s3.download(&at("raw/one.csv"), false, &d.join("got/one.csv"))
        .unwrap();
    assert_eq!(std::fs::read(d.join("got/one.csv")).unwrap(), b"a,b\n1,2\n");

    // A file larger than a part goes up in parts (5 + 5 + 1 MiB) and comes back whole.
    let big: Vec<u8> = (0..11 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(d.join("big.bin"), &big).unwrap();
    s3.upload(&d.join("big.bin"), &at("raw/big.bin")).unwrap();
    s3.download(&at("raw/big.bin"), false, &d.join("big.back"))
        .unwrap();
    assert!(std::fs::read(d.join("big.back")).unwrap() == big);
    assert!(
        etag("raw/big.bin").ends_with("-3"),
        "{}",
        etag("raw/big.bin")
    );
    assert!(!etag("raw/one.csv").contains('-'));

    // A key that would be written outside its folder is refused.
    s3.write(&at("evil/../../escaped"), b"x").unwrap();
    let err = s3.download(&at("evil"), true, &d.join("evil")).unwrap_err();
    assert!(matches!(err, CopilotError::Remote { .. }), "{err}");
    assert!(err.to_string().contains("outside the folder"), "{err}");
    assert!(!d.join("escaped").exists());
    // Not an S3 URI.
    let err = s3.read(&format!("s3://{bucket}")).unwrap_err().to_string();
    assert!(err.contains("not an s3://bucket/key URI"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

/// The copilot program with S3 reached through flytekit's variables (as a deployment configured for
/// flytekit gives every pod), on a system without certificates (as in an empty image).
fn copilot() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_updraft-copilot"));
    let none =
        std::env::temp_dir().join(format!("updraft-copilot-no-certs-{}", std::process::id()));
    std::fs::create_dir_all(&none).unwrap();
    c.env("SSL_CERT_FILE", none.join("none.pem"))
        .env("SSL_CERT_DIR", &none);
    for k in [
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
    ] {
        c.env_remove(k);
    }
    c.env("FLYTE_AWS_ENDPOINT", endpoint())
        .env("FLYTE_AWS_ACCESS_KEY_ID", "test")
        .env("FLYTE_AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1");
    c
}

#[test]
fn the_program_moves_a_raw_containers_data_through_s3() {
    let (s3, bucket, _) = store("program");
    let d = dir("program");
    let at = |k: &str| format!("s3://{bucket}/{k}");
    // Inputs as the runtime leaves them: inputs.pb, and blobs elsewhere in the bucket.
    std::fs::create_dir_all(d.join("shards")).unwrap();
    std::fs::write(d.join("shards/0.txt"), "3\n").unwrap();
    std::fs::write(d.join("shards/1.txt"), "4\n").unwrap();
    s3.upload(&d.join("shards"), &at("data/shards")).unwrap();
    std::fs::write(d.join("scale.txt"), "10").unwrap();
    s3.upload(&d.join("scale.txt"), &at("data/scale.txt"))
        .unwrap();
    let types = variables(&[("scale", "file"), ("shards", "dir"), ("label", "str")]);
    let json = serde_json::json!({
        "scale": at("data/scale.txt"),
        "shards": at("data/shards"),
        "label": "sum",
    });
    let inputs = LiteralMap {
        literals: types
            .variables
            .iter()
            .map(|(n, v)| {
                let t = v.r#type.as_ref().unwrap();
                (n.clone(), literal::from_json(&json[n], t).unwrap())
            })
            .collect(),
    };
    s3.write(&at("exec/n0/inputs.pb"), &inputs.encode_to_vec())
        .unwrap();

    let (input_dir, install, out_dir) = (d.join("in"), d.join("bin"), d.join("out"));
    let out = copilot()
        .args(["download", "--inputs", &at("exec/n0/inputs.pb"), "--to"])
        .arg(&input_dir)
        .arg("--install")
        .arg(&install)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(input_dir.join("label")).unwrap(),
        "sum"
    );
    assert_eq!(
        std::fs::read_to_string(input_dir.join("scale")).unwrap(),
        "10"
    );
    assert_eq!(
        std::fs::read_to_string(input_dir.join("shards/1.txt")).unwrap(),
        "4\n"
    );

    // The command reads its input files and writes a number, a file and a folder.
    let outputs = variables(&[("total", "int"), ("report", "file"), ("parts", "dir")]);
    let script = r#"s=$(cat "$1/scale"); t=0; for f in "$1"/shards/*; do t=$((t + $(cat "$f") * s)); done
        echo $t > "$2/total"; echo "$(cat "$1/label")=$t" > "$2/report"
        mkdir -p "$2/parts/x"; echo a > "$2/parts/a"; echo b > "$2/parts/x/b""#;
    let run = |script: &str, prefix: &str| {
        let mut c = copilot();
        c.args(["run", "--output-prefix", &at(prefix), "--raw-output-prefix"])
            .arg(at(&format!("raw/{prefix}")))
            .arg("--from")
            .arg(&out_dir)
            .args(["--interface", &encode_interface(&outputs), "--"])
            .args(["sh", "-c", script, "sh"])
            .arg(&input_dir)
            .arg(&out_dir);
        c.output().unwrap()
    };
    let out = run(script, "exec/n0/0");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcome = |prefix: &str| {
        from_output_files(&OutputFiles::read_with(|f| {
            s3.read(&format!("{}/{f}", at(prefix))).ok()
        }))
    };
    let Some(TaskStatus::Succeeded { outputs: got, .. }) = outcome("exec/n0/0") else {
        panic!("{:?}", outcome("exec/n0/0"));
    };
    let json = |n: &str| literal::to_json(&got.literals[n]);
    assert_eq!(json("total"), serde_json::json!(70));
    assert_eq!(
        json("report"),
        serde_json::json!(at("raw/exec/n0/0/report"))
    );
    assert_eq!(json("parts"), serde_json::json!(at("raw/exec/n0/0/parts")));
    assert_eq!(s3.read(&at("raw/exec/n0/0/report")).unwrap(), b"sum=70\n");
    s3.download(&at("raw/exec/n0/0/parts"), true, &d.join("parts"))
        .unwrap();
    assert_eq!(
        tree(&d.join("parts")),
        vec![
            ("a".to_string(), b"a\n".to_vec()),
            ("x/b".to_string(), b"b\n".to_vec())
        ]
    );

    // `_ERROR`: error.pb in S3, and the blobs are not copied.
    let _ = std::fs::remove_dir_all(&out_dir);
    let out = run(
        r#"echo "disk full" > "$2/_ERROR"; echo a > "$2/report""#,
        "exec/n0/1",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(matches!(
        outcome("exec/n0/1"),
        Some(TaskStatus::Failed { code, message, .. }) if code == "ContainerError" && message == "disk full"
    ));
    assert!(s3.read(&at("raw/exec/n0/1/report")).is_err());

    // Inputs that are not there: a clear error naming the location, and exit code 2.
    let out = copilot()
        .args(["download", "--inputs", &at("exec/none/inputs.pb"), "--to"])
        .arg(d.join("none"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exec/none/inputs.pb") && err.contains("no such object"),
        "{err}"
    );
    // A scheme this copilot does not read.
    let out = copilot()
        .args(["download", "--inputs", "gs://b/inputs.pb", "--to"])
        .arg(d.join("none"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only s3:// and local paths"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn s3_over_https_trusts_the_systems_certificates_else_the_built_in_roots() {
    // LocalStack's HTTPS answers with its own certificate (for localhost), which `scripts/test` names.
    let ca = std::env::var("UPDRAFT_TEST_LOCALSTACK_CA").unwrap_or_else(|_| {
        panic!("UPDRAFT_TEST_LOCALSTACK_CA is not set: run the tests with `bash scripts/test`")
    });
    assert!(Path::new(&ca).is_file(), "no certificate at {ca}");
    let (s3, bucket, _) = store("https");
    let d = dir("https");
    let inputs = LiteralMap::default();
    let uri = format!("s3://{bucket}/exec/inputs.pb");
    s3.write(&uri, &inputs.encode_to_vec()).unwrap();
    let port = endpoint().rsplit(':').next().unwrap().to_string();
    let https = format!("https://localhost:{port}");
    let download = |certs: &str| {
        copilot()
            .env("FLYTE_AWS_ENDPOINT", &https)
            .env("SSL_CERT_FILE", certs)
            .args(["download", "--inputs", &uri, "--to"])
            .arg(d.join("in"))
            .output()
            .unwrap()
    };
    // The system's certificates (here: the file SSL_CERT_FILE names) are trusted.
    let out = download(&ca);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without any, the built-in roots are used, and they do not vouch for LocalStack's certificate.
    let none = d.join("none.pem");
    let out = download(none.to_str().unwrap());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}
