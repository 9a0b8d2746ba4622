//! Where attempts' data live: the store a connector reads an attempt's outcome from, and the runtime
//! writes its inputs to.

use updraft_engine::exec::outcome::OutputFiles;

use crate::Transient;

/// Objects by URI: local paths, or a remote store's URIs (`s3://…`).
#[async_trait::async_trait]
pub trait DataStore: Send + Sync {
    /// The object at `uri`, or None when there is none.
    async fn get(&self, uri: &str) -> Result<Option<Vec<u8>>, Transient>;
    /// Writes `bytes` as the object at `uri` (creating its folder, for local paths).
    async fn put(&self, uri: &str, bytes: Vec<u8>) -> Result<(), Transient>;
}

/// Local paths (`file://` URIs too).
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalData;

fn local(uri: &str) -> &str {
    uri.strip_prefix("file://").unwrap_or(uri)
}

#[async_trait::async_trait]
impl DataStore for LocalData {
    async fn get(&self, uri: &str) -> Result<Option<Vec<u8>>, Transient> {
        match std::fs::read(local(uri)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Transient(format!("{uri}: {e}"))),
        }
    }

    async fn put(&self, uri: &str, bytes: Vec<u8>) -> Result<(), Transient> {
        let path = std::path::Path::new(local(uri));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Transient(format!("{uri}: {e}")))?;
        }
        std::fs::write(path, bytes).map_err(|e| Transient(format!("{uri}: {e}")))
    }
}

/// A data store with one attempt's outputs.pb already in hand (its end signal carried it): reading
/// `<output_prefix>/outputs.pb` returns those bytes instead of reading the store; every other read and
/// every write goes to the store.
pub struct WithOutputs<'a> {
    store: &'a dyn DataStore,
    uri: String,
    outputs: &'a [u8],
}

impl<'a> WithOutputs<'a> {
    /// `store`, with `outputs` as the outputs.pb under `output_prefix`.
    pub fn new(store: &'a dyn DataStore, output_prefix: &str, outputs: &'a [u8]) -> Self {
        let uri = format!("{}/outputs.pb", output_prefix.trim_end_matches('/'));
        Self {
            store,
            uri,
            outputs,
        }
    }
}

#[async_trait::async_trait]
impl DataStore for WithOutputs<'_> {
    async fn get(&self, uri: &str) -> Result<Option<Vec<u8>>, Transient> {
        if uri == self.uri {
            return Ok(Some(self.outputs.to_vec()));
        }
        self.store.get(uri).await
    }

    async fn put(&self, uri: &str, bytes: Vec<u8>) -> Result<(), Transient> {
        self.store.put(uri, bytes).await
    }
}

/// The file that decides a flytekit task's outcome at its output prefix: the first of outputs.pb,
/// error.pb and futures.pb found, in that order (the order of their weight: see
/// `updraft_engine::exec::outcome::from_output_files`), the others not read — a success costs one read.
pub async fn read_output_files(
    data: &dyn DataStore,
    output_prefix: &str,
) -> Result<OutputFiles, Transient> {
    let prefix = output_prefix.trim_end_matches('/');
    let mut found = Vec::new();
    for name in OutputFiles::NAMES {
        if let Some(b) = data.get(&format!("{prefix}/{name}")).await? {
            found.push((name, b));
            break;
        }
    }
    Ok(OutputFiles::read_with(|n| {
        found
            .iter()
            .position(|(name, _)| *name == n)
            .map(|i| found.swap_remove(i).1)
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn local_objects_round_trip_and_a_missing_one_is_none() {
        let dir = std::env::temp_dir().join(format!("updraft-data-{}", std::process::id()));
        let uri = dir.join("a/b.pb").display().to_string();
        block_on(LocalData.put(&uri, b"x".to_vec())).unwrap();
        assert_eq!(block_on(LocalData.get(&uri)).unwrap(), Some(b"x".to_vec()));
        let missing = format!("file://{}", dir.join("nope").display());
        assert_eq!(block_on(LocalData.get(&missing)).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn outputs_in_hand_are_read_in_place_of_the_stores_and_nothing_else_is() {
        let dir = std::env::temp_dir().join(format!("updraft-with-{}", std::process::id()));
        let prefix = dir.join("out").display().to_string();
        block_on(LocalData.put(&format!("{prefix}/outputs.pb"), b"stored".to_vec())).unwrap();
        block_on(LocalData.put(&format!("{prefix}/other.pb"), b"other".to_vec())).unwrap();
        let data = WithOutputs::new(&LocalData, &format!("{prefix}/"), b"sent");
        let files = block_on(read_output_files(&data, &prefix)).unwrap();
        assert_eq!(files.outputs, Some(b"sent".to_vec()));
        assert_eq!(
            block_on(data.get(&format!("{prefix}/other.pb"))).unwrap(),
            Some(b"other".to_vec())
        );
        block_on(data.put(&format!("{prefix}/new.pb"), b"n".to_vec())).unwrap();
        assert_eq!(
            block_on(LocalData.get(&format!("{prefix}/new.pb"))).unwrap(),
            Some(b"n".to_vec())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Polls a future that never waits (the local store's) to its end.
    pub(crate) fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }
}
