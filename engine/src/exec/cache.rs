//! Cache keys: task identity + cache version + a hash of the inputs (minus ignored ones).

use sha2::{Digest, Sha256};
use updraft_proto::Message;
use updraft_proto::core::LiteralMap;

/// The cache key of running `task` (at `version`) on `inputs`, ignoring the inputs named in `ignore`.
/// Inputs are encoded deterministically (maps in key order) before hashing.
pub fn cache_key(task: &str, version: &str, inputs: &LiteralMap, ignore: &[String]) -> String {
    let mut kept = inputs.clone();
    kept.literals.retain(|k, _| !ignore.contains(k));
    let mut h = Sha256::new();
    for part in [task.as_bytes(), b"\0", version.as_bytes(), b"\0"] {
        h.update(part);
    }
    h.update(kept.encode_to_vec());
    let digest = h.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{task}:{version}:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::literal::primitive_lit;
    use updraft_proto::core::primitive::Value as P;

    fn inputs(pairs: &[(&str, i64)]) -> LiteralMap {
        LiteralMap {
            literals: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), primitive_lit(P::Integer(*v))))
                .collect(),
        }
    }

    #[test]
    fn keys_depend_on_what_they_should() {
        let base = cache_key("t", "1", &inputs(&[("a", 1), ("b", 2)]), &[]);
        assert_eq!(
            base,
            cache_key("t", "1", &inputs(&[("b", 2), ("a", 1)]), &[])
        );
        assert_ne!(
            base,
            cache_key("t", "2", &inputs(&[("a", 1), ("b", 2)]), &[])
        );
        assert_ne!(
            base,
            cache_key("u", "1", &inputs(&[("a", 1), ("b", 2)]), &[])
        );
        assert_ne!(
            base,
            cache_key("t", "1", &inputs(&[("a", 1), ("b", 3)]), &[])
        );
        let ignored = cache_key("t", "1", &inputs(&[("a", 1), ("b", 2)]), &["b".into()]);
        assert_eq!(
            ignored,
            cache_key("t", "1", &inputs(&[("a", 1), ("b", 99)]), &["b".into()])
        );
    }
}
