use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ssm::Client;

use super::sdk_error;
use crate::ports::{ParamError, Params};

#[derive(Clone)]
pub struct SsmParams {
    client: Client,
}

impl SsmParams {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Several plain parameters' values, in the order asked (`GetParameters`, ten at a
    /// time); a missing one is named.
    pub async fn get_many(&self, names: &[String]) -> Result<Vec<String>, ParamError> {
        let mut found: HashMap<String, String> = HashMap::new();
        for chunk in names.chunks(10) {
            let out = self
                .client
                .get_parameters()
                .set_names(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| ParamError::Unavailable {
                    name: chunk.join(", "),
                    reason: sdk_error(&e),
                })?;
            for p in out.parameters.unwrap_or_default() {
                if let (Some(n), Some(v)) = (p.name, p.value) {
                    found.insert(n, v);
                }
            }
        }
        names
            .iter()
            .map(|n| {
                found
                    .remove(n)
                    .ok_or_else(|| ParamError::Missing(n.clone()))
            })
            .collect()
    }
}

#[async_trait]
impl Params for SsmParams {
    async fn get(&self, name: &str) -> Result<String, ParamError> {
        let out = self
            .client
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await;
        match out {
            Ok(o) => o
                .parameter
                .and_then(|p| p.value)
                .ok_or_else(|| ParamError::Missing(name.into())),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found()) =>
            {
                Err(ParamError::Missing(name.into()))
            }
            Err(e) => Err(ParamError::Unavailable {
                name: name.into(),
                reason: sdk_error(&e),
            }),
        }
    }

    async fn put_secret(&self, name: &str, value: &str) -> Result<(), ParamError> {
        self.client
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| ParamError::Unavailable {
                name: name.into(),
                reason: sdk_error(&e),
            })?;
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<(), ParamError> {
        match self.client.delete_parameter().name(name).send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found()) =>
            {
                Ok(())
            }
            Err(e) => Err(ParamError::Unavailable {
                name: name.into(),
                reason: sdk_error(&e),
            }),
        }
    }
}

/// Caches parameter values for `ttl` so a warm function does not call SSM per message.
/// Values (secrets among them) live only in memory and are never logged.
pub struct CachedParams<P> {
    inner: P,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, String)>>,
}

impl<P: Params> CachedParams<P> {
    pub fn new(inner: P, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl<P: Params> Params for CachedParams<P> {
    async fn get(&self, name: &str) -> Result<String, ParamError> {
        if let Some((at, v)) = self.cache.lock().expect("cache lock").get(name)
            && at.elapsed() < self.ttl
        {
            return Ok(v.clone());
        }
        let v = self.inner.get(name).await?;
        self.cache
            .lock()
            .expect("cache lock")
            .insert(name.into(), (Instant::now(), v.clone()));
        Ok(v)
    }

    fn invalidate(&self, name: &str) {
        self.cache.lock().expect("cache lock").remove(name);
    }

    async fn put_secret(&self, name: &str, value: &str) -> Result<(), ParamError> {
        self.invalidate(name);
        self.inner.put_secret(name, value).await
    }

    async fn delete(&self, name: &str) -> Result<(), ParamError> {
        self.invalidate(name);
        self.inner.delete(name).await
    }
}
