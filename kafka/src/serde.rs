//! Avro over the Confluent wire format, with the hub's schemas registered under their
//! topics' subjects (TopicNameStrategy) at FULL_TRANSITIVE compatibility (consents at
//! BACKWARD_TRANSITIVE, see `SchemaKind::compatibility`). Records written
//! with the hub's own schema decode on a fast path; others are resolved against the
//! writer's schema, fetched once by id and cached.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};

use apache_avro::Schema;
use dho_schemas::avro::SchemaKind;
use dho_schemas::codec::{self, AvroRecord, RecordView};
use dho_schemas::{topics, wire};
use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_schema_by_id, post_schema,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

use crate::{Error, Result};

/// What a cached schema id is.
#[derive(Debug, Clone)]
enum Known {
    /// Exactly the hub's own schema of this kind: decode on the fast path.
    Own(SchemaKind),
    /// Another writer's schema.
    Foreign(Arc<Schema>),
    /// A Protobuf schema: records carry a message index and a Protobuf body, decoded into
    /// the same model types (platforms may publish Protobuf; the hub speaks Avro onwards).
    Protobuf,
}

/// Encodes and decodes the hub's records against a Confluent-compatible registry.
#[derive(Debug, Clone)]
pub struct AvroSerde {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    url: String,
    sr: SrSettings,
    http: reqwest::Client,
    known: RwLock<HashMap<u32, Known>>,
}

/// Encodes one record type with its registered schema id.
#[derive(Debug, Clone)]
pub struct Encoder<T> {
    id: u32,
    _type: PhantomData<fn(&T)>,
}

impl<T: AvroRecord> Encoder<T> {
    pub fn schema_id(&self) -> u32 {
        self.id
    }

    /// The framed record: magic byte, schema id, Avro body.
    pub fn encode(&self, value: &T) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(256);
        wire::frame_into(self.id, &mut out);
        codec::encode_into(value, &mut out)?;
        Ok(out)
    }

    /// Appends to `out` the framed record of a borrowed view of a `T` (same bytes as
    /// [`encode`](Self::encode) of the owned record).
    pub fn append_view<V: RecordView<Record = T>>(
        &self,
        view: &V,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        wire::frame_into(self.id, out);
        view.encode_into(out)?;
        Ok(())
    }
}

impl AvroSerde {
    pub fn new(registry_url: &str) -> Self {
        let url = registry_url.trim_end_matches('/').to_string();
        Self {
            inner: Arc::new(Inner {
                sr: SrSettings::new(url.clone()),
                url,
                http: reqwest::Client::new(),
                known: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// Registers `T`'s schema for values of `topic` (subject `<topic>-value`) at its kind's
    /// compatibility, and returns an encoder with its id. An incompatible change to a
    /// subject is refused by the registry with the subject and reason in the error.
    pub async fn register<T: AvroRecord>(&self, topic: &str) -> Result<Encoder<T>> {
        let subject = topics::value_subject(topic);
        self.set_compatibility(&subject, T::KIND.compatibility())
            .await?;
        let supplied = SuppliedSchema::new(
            Some(format!("no.dho.v1.{}", T::KIND.type_name())),
            SchemaType::Avro,
            T::KIND.schema_text().to_string(),
        );
        let registered = post_schema(&self.inner.sr, subject.clone(), supplied)
            .await
            .map_err(|e| registry_error(&subject, e))?;
        self.remember(registered.id, Known::Own(T::KIND));
        Ok(Encoder {
            id: registered.id,
            _type: PhantomData,
        })
    }

    /// Registers a Protobuf schema under `subject` and returns its id. Protobuf writers use
    /// the record-name subject (e.g. `dho.v1.Measurement`): a topic's own subject holds its
    /// Avro schema at FULL_TRANSITIVE, where a change of schema type is refused.
    pub async fn register_protobuf(&self, subject: &str, schema: &str) -> Result<u32> {
        let supplied = SuppliedSchema::new(
            Some(subject.to_string()),
            SchemaType::Protobuf,
            schema.to_string(),
        );
        let registered = post_schema(&self.inner.sr, subject.to_string(), supplied)
            .await
            .map_err(|e| registry_error(subject, e))?;
        self.remember(registered.id, Known::Protobuf);
        Ok(registered.id)
    }

    async fn set_compatibility(&self, subject: &str, compatibility: &str) -> Result<()> {
        let url = format!("{}/config/{}", self.inner.url, encode_subject(subject));
        let response = self
            .inner
            .http
            .put(url)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&serde_json::json!({ "compatibility": compatibility }))
            .send()
            .await
            .map_err(|e| Error::RegistryUnavailable {
                detail: e.to_string(),
            })?;
        if response.status().is_success() {
            Ok(())
        } else if response.status().is_server_error() {
            Err(Error::RegistryUnavailable {
                detail: format!("HTTP {}", response.status()),
            })
        } else {
            Err(Error::Registry {
                subject: subject.to_string(),
                detail: response.text().await.unwrap_or_default(),
            })
        }
    }

    fn remember(&self, id: u32, known: Known) {
        self.inner
            .known
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, known);
    }

    fn lookup(&self, id: u32) -> Option<Known> {
        self.inner
            .known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Decodes a framed record into `T`, whichever compatible schema version wrote it.
    pub async fn decode<T: AvroRecord>(&self, bytes: &[u8]) -> Result<T> {
        let (id, _) = wire::unframe(bytes)?;
        let known = match self.lookup(id) {
            Some(known) => known,
            None => self.fetch(id).await?,
        };
        decode_known(id, &known, bytes)
    }

    /// [`decode`](Self::decode) into `into`, reusing its allocations where the codec can
    /// (a consumer decoding record after record into one value). On an error `into` holds
    /// an unspecified (valid) value.
    pub async fn decode_into<T: AvroRecord>(&self, bytes: &[u8], into: &mut T) -> Result<()> {
        let (id, _) = wire::unframe(bytes)?;
        let known = match self.lookup(id) {
            Some(known) => known,
            None => self.fetch(id).await?,
        };
        match known {
            Known::Own(kind) if kind == T::KIND => {
                Ok(codec::decode_into(&bytes[wire::HEADER_LEN..], into)?)
            }
            _ => {
                *into = decode_known(id, &known, bytes)?;
                Ok(())
            }
        }
    }

    /// Decodes without a network round trip if the id is already known; `None` means the
    /// caller must [`prefetch`](Self::prefetch) it first (so hot loops stay synchronous).
    pub fn decode_cached<T: AvroRecord>(&self, bytes: &[u8]) -> Option<Result<T>> {
        match wire::unframe(bytes) {
            Ok((id, _)) => self.lookup(id).map(|known| decode_known(id, &known, bytes)),
            Err(e) => Some(Err(e.into())),
        }
    }

    /// Fetches and caches the schema behind `id`.
    pub async fn prefetch(&self, bytes: &[u8]) -> Result<()> {
        let (id, _) = wire::unframe(bytes)?;
        if self.lookup(id).is_none() {
            self.fetch(id).await?;
        }
        Ok(())
    }

    async fn fetch(&self, id: u32) -> Result<Known> {
        let registered = get_schema_by_id(id, &self.inner.sr).await.map_err(|e| {
            if e.retriable {
                Error::RegistryUnavailable {
                    detail: e.to_string(),
                }
            } else {
                Error::UnknownSchema { id }
            }
        })?;
        if registered.schema_type == SchemaType::Protobuf {
            self.remember(id, Known::Protobuf);
            return Ok(Known::Protobuf);
        }
        if registered.schema_type != SchemaType::Avro {
            return Err(Error::WrongSchema {
                id,
                expected: "an Avro schema",
                found: format!("{:?}", registered.schema_type),
            });
        }
        let schema =
            Schema::parse_str(&registered.schema).map_err(|_| Error::UnknownSchema { id })?;
        let known = SchemaKind::ALL
            .into_iter()
            .find(|kind| kind.schema().canonical_form() == schema.canonical_form())
            .map(Known::Own)
            .unwrap_or_else(|| Known::Foreign(Arc::new(schema)));
        self.remember(id, known.clone());
        Ok(known)
    }
}

/// Decodes a whole framed record (`bytes`, header included) whose schema is `known`.
fn decode_known<T: AvroRecord>(id: u32, known: &Known, bytes: &[u8]) -> Result<T> {
    let body = &bytes[wire::HEADER_LEN..];
    match known {
        Known::Protobuf => {
            let frame = wire::unframe_protobuf(bytes)?;
            match T::from_protobuf(&frame.message_index, frame.body) {
                Some(decoded) => Ok(decoded?),
                None => Err(Error::WrongSchema {
                    id,
                    expected: T::KIND.type_name(),
                    found: "a Protobuf schema".into(),
                }),
            }
        }
        Known::Own(kind) if *kind == T::KIND => Ok(codec::decode(body)?),
        Known::Own(kind) => Err(Error::WrongSchema {
            id,
            expected: T::KIND.type_name(),
            found: kind.type_name().to_string(),
        }),
        Known::Foreign(schema) => {
            let name = schema
                .name()
                .map(|n| n.name().to_string())
                .unwrap_or_default();
            if name != T::KIND.type_name() {
                return Err(Error::WrongSchema {
                    id,
                    expected: T::KIND.type_name(),
                    found: name,
                });
            }
            Ok(codec::decode_with_writer(schema, body)?)
        }
    }
}

fn encode_subject(subject: &str) -> String {
    subject.replace('%', "%25").replace('/', "%2F")
}

fn registry_error(subject: &str, e: SRCError) -> Error {
    if e.retriable {
        Error::RegistryUnavailable {
            detail: e.to_string(),
        }
    } else {
        Error::Registry {
            subject: subject.to_string(),
            detail: e.to_string(),
        }
    }
}
