//! The S3 blob store: packages, inputs and outputs, large state records.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;

use crate::Error;

/// The largest object read into memory (packages, outputs, records): 100 MiB.
pub const MAX_READ: u64 = 100 << 20;

/// A bucket and key from `s3://bucket/key`.
pub fn parse_uri(uri: &str) -> Result<(&str, &str), Error> {
    uri.strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .ok_or_else(|| Error::Invalid(format!("`{uri}` is not an s3://bucket/key URI")))
}

/// Objects in S3.
#[derive(Debug, Clone)]
pub struct Blobs {
    client: Client,
    bucket: String,
}

impl Blobs {
    /// Blobs in `bucket` (URIs may name other buckets).
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    /// The stack's bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `s3://<bucket>/<key>` in the stack's bucket.
    pub fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// The object at `uri`, or None when there is none. Objects over [`MAX_READ`] are refused before
    /// they are read.
    pub async fn get(&self, uri: &str) -> Result<Option<Vec<u8>>, Error> {
        let (bucket, key) = parse_uri(uri)?;
        match self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let size = out.content_length().unwrap_or(0).max(0) as u64;
                if size > MAX_READ {
                    return Err(Error::Invalid(format!(
                        "{uri} is {} MiB; at most {} MiB are read",
                        size >> 20,
                        MAX_READ >> 20
                    )));
                }
                let data = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| Error::Aws(format!("S3 GetObject {uri}: {e}")))?;
                Ok(Some(data.into_bytes().to_vec()))
            }
            Err(e) => {
                let missing = e
                    .as_service_error()
                    .is_some_and(aws_sdk_s3::operation::get_object::GetObjectError::is_no_such_key);
                if missing {
                    Ok(None)
                } else {
                    Err(Error::aws(&format!("S3 GetObject {uri}"), e))
                }
            }
        }
    }

    /// Writes `data` at `uri`.
    pub async fn put(&self, uri: &str, data: Vec<u8>) -> Result<(), Error> {
        let (bucket, key) = parse_uri(uri)?;
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| Error::aws(&format!("S3 PutObject {uri}"), e))?;
        Ok(())
    }
}

/// The stack's attempts keep their data in S3: connectors read outcomes through this.
#[async_trait::async_trait]
impl updraft_connector::DataStore for Blobs {
    async fn get(&self, uri: &str) -> Result<Option<Vec<u8>>, updraft_connector::Transient> {
        Blobs::get(self, uri)
            .await
            .map_err(|e| updraft_connector::Transient(e.to_string()))
    }

    async fn put(&self, uri: &str, bytes: Vec<u8>) -> Result<(), updraft_connector::Transient> {
        Blobs::put(self, uri, bytes)
            .await
            .map_err(|e| updraft_connector::Transient(e.to_string()))
    }
}
