//! The artifact bucket on S3. Objects are written with `If-None-Match: *` (a key is a
//! content address, so an object already there is this content: nothing is written twice,
//! even in a versioned bucket) and a SHA-256 checksum S3 verifies on arrival.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::sdk_error;
use crate::ports::{ArtifactStore, StoreError};

#[derive(Clone)]
pub struct S3Artifacts {
    client: Client,
    bucket: String,
}

impl S3Artifacts {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    fn configured(&self) -> Result<(), StoreError> {
        if self.bucket.is_empty() {
            return Err(StoreError::Unavailable(
                "no artifact bucket is configured (SHEPHERD_ARTIFACT_BUCKET)".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl ArtifactStore for S3Artifacts {
    async fn put_new(
        &self,
        key: &str,
        body: &[u8],
        content_type: &str,
    ) -> Result<bool, StoreError> {
        self.configured()?;
        let checksum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
        let res = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(checksum)
            .if_none_match("*")
            .body(ByteStream::from(body.to_vec()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            // 412: an object is there already (409 if another write of it is in flight).
            Err(e)
                if e.raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 412 | 409)) =>
            {
                Ok(false)
            }
            Err(e) => Err(StoreError::Unavailable(format!(
                "artifact {key}: {}",
                sdk_error(&e)
            ))),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.configured()?;
        let res = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        let out = match res {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "artifact {key}: {}",
                    sdk_error(&e)
                )));
            }
        };
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Unavailable(format!("artifact {key}: {e}")))?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    async fn presign(&self, key: &str, ttl: Duration) -> Result<String, StoreError> {
        self.configured()?;
        let config = PresigningConfig::expires_in(ttl)
            .map_err(|e| StoreError::Unavailable(format!("presigning {key}: {e}")))?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| StoreError::Unavailable(format!("presigning {key}: {}", sdk_error(&e))))?;
        Ok(req.uri().to_string())
    }
}
