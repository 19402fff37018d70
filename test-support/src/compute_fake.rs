//! A Compute Engine API fake on 127.0.0.1 that behaves like GCE for the
//! calls kiln makes: `images.insert` / `get` / `delete` and
//! `globalOperations.get` / `wait`.
//!
//! Images carry what GCE gives them: a numeric `id` (as a string of
//! digits) and a `selfLink`, returned by `images.get`.
//! It checks names, families, labels and licenses like GCE (HTTP 400), refuses an
//! existing name (HTTP 409), honours `requestId` (a repeated ID returns the
//! first operation), fetches `rawDisk.source` from the storage emulator and
//! checks it is a valid GCE tarball. Operations move PENDING → RUNNING →
//! DONE one step per poll, never by the clock, so tests need no timing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::tarball::validate_gce_tarball;

#[derive(Default)]
struct FakeState {
    images: BTreeMap<(String, String), Value>,
    /// Each image's disk, as GCE keeps it: the tarball it was made from.
    disks: BTreeMap<(String, String), Arc<Vec<u8>>>,
    operations: HashMap<String, FakeOperation>,
    request_ids: HashMap<String, String>,
    insert_request_ids: Vec<Option<String>>,
    /// Inserts to handle but answer with 503, as if the answer got lost.
    lose_insert_responses: usize,
    /// Keep operations RUNNING forever.
    hold_operations: bool,
    counter: u64,
}

struct FakeOperation {
    json: Value,
    polls: u32,
    /// What DONE does: make this image, delete this one, or fail.
    effect: Effect,
}

enum Effect {
    Create {
        key: (String, String),
        image: Value,
        disk: Arc<Vec<u8>>,
    },
    Delete {
        key: (String, String),
    },
    Fail {
        errors: Vec<Value>,
    },
}

type Shared = Arc<Mutex<FakeState>>;

#[derive(Clone)]
struct App {
    state: Shared,
    storage_base_url: String,
    base_url: String,
}

/// The running fake; stops when dropped.
pub struct ComputeFake {
    /// Use as the Compute endpoint (`KILN_COMPUTE_ENDPOINT`).
    pub base_url: String,
    state: Shared,
    task: JoinHandle<()>,
}

impl Drop for ComputeFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ComputeFake {
    /// Starts the fake; image sources are read from the storage emulator
    /// at `storage_base_url`.
    pub async fn start(storage_base_url: &str) -> std::io::Result<ComputeFake> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        let state: Shared = Arc::default();
        let app = App {
            state: state.clone(),
            storage_base_url: storage_base_url.trim_end_matches('/').to_string(),
            base_url: base_url.clone(),
        };
        let router = Router::new()
            .route("/projects/{project}/global/images", post(insert_image))
            .route(
                "/projects/{project}/global/images/{name}",
                get(get_image).delete(delete_image),
            )
            .route(
                "/projects/{project}/global/operations/{op}",
                get(get_operation),
            )
            .route(
                "/projects/{project}/global/operations/{op}/wait",
                post(get_operation),
            )
            .with_state(app);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(ComputeFake {
            base_url,
            state,
            task,
        })
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Handle the next `n` inserts but answer them with 503.
    pub fn lose_insert_responses(&self, n: usize) {
        self.with_state(|s| s.lose_insert_responses = n);
    }

    /// Keep every operation RUNNING (for timeout and cancellation tests).
    pub fn hold_operations(&self, hold: bool) {
        self.with_state(|s| s.hold_operations = hold);
    }

    /// The `requestId` of every insert request received, in order.
    pub fn insert_request_ids(&self) -> Vec<Option<String>> {
        self.with_state(|s| s.insert_request_ids.clone())
    }

    /// The image resource, if it exists.
    pub fn image(&self, project: &str, name: &str) -> Option<Value> {
        self.with_state(|s| s.images.get(&(project.into(), name.into())).cloned())
    }

    /// The GCE tarball an image was created from, as an instance made from
    /// the image would boot it.
    pub fn image_disk(&self, project: &str, name: &str) -> Option<Arc<Vec<u8>>> {
        self.with_state(|s| s.disks.get(&(project.into(), name.into())).cloned())
    }

    /// Makes an image exist, as if created earlier.
    pub fn add_image(&self, project: &str, name: &str) {
        let image = json!({
            "kind": "compute#image",
            "name": name,
            "id": image_id(),
            "selfLink": image_link(&self.base_url, project, name),
            "status": "READY",
        });
        self.with_state(|s| {
            s.images.insert((project.into(), name.into()), image);
        });
    }
}

/// A new image's id: GCE sends its uint64 ids as strings of digits.
fn image_id() -> String {
    let (high, _) = uuid::Uuid::new_v4().as_u64_pair();
    // Real ids are 19 digits or so; any u64 is the right kind of value.
    (high >> 1).to_string()
}

/// An image's `selfLink`, on the fake as GCE's are on its own endpoint.
fn image_link(base_url: &str, project: &str, name: &str) -> String {
    format!("{base_url}/projects/{project}/global/images/{name}")
}

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, FakeState> {
    match state.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn api_error(status: StatusCode, reason: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "error": {
                "code": status.as_u16(),
                "message": message,
                "errors": [{ "domain": "global", "reason": reason, "message": message }],
            }
        })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Params {
    #[serde(rename = "requestId")]
    request_id: Option<String>,
}

/// The patterns GCE quotes in its 400 answers: resource names and
/// families, label keys, label values.
const NAME_REGEX: &str = "(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)";
const LABEL_KEY_REGEX: &str = "[a-z][-_a-z0-9]{0,62}";
const LABEL_VALUE_REGEX: &str = "[-_a-z0-9]{0,63}";

/// A license reference GCE resolves: its URL under either API root, or
/// the partial `projects/<project>/global/licenses/<name>`, where the
/// project may be domain-scoped or a number.
const LICENSE_REGEX: &str = concat!(
    "(?:https://(?:www|compute)\\.googleapis\\.com/compute/(?:v1|beta|alpha)/)?",
    "projects/(?:(?:[-a-z0-9]{1,63}\\.)*[-a-z0-9]{1,63}:)?",
    "(?:[0-9]{1,19}|[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)",
    "/global/licenses/(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)"
);

fn matches_whole(pattern: &str, text: &str) -> bool {
    regex::Regex::new(&format!("^{pattern}$")).is_ok_and(|re| re.is_match(text))
}

fn is_valid_resource_name(name: &str) -> bool {
    matches_whole(NAME_REGEX, name)
}

fn is_valid_label_key(key: &str) -> bool {
    matches_whole(LABEL_KEY_REGEX, key)
}

fn is_valid_label_value(value: &str) -> bool {
    matches_whole(LABEL_VALUE_REGEX, value)
}

fn check_fields(body: &Value) -> Result<(), String> {
    let name = body.get("name").and_then(Value::as_str).unwrap_or("");
    if !is_valid_resource_name(name) {
        return Err(format!(
            "Invalid value for field 'resource.name': '{name}'. Must be a match of regex '{NAME_REGEX}'"
        ));
    }
    if let Some(family) = body.get("family").and_then(Value::as_str)
        && !is_valid_resource_name(family)
    {
        return Err(format!(
            "Invalid value for field 'resource.family': '{family}'. Must be a match of regex '{NAME_REGEX}'"
        ));
    }
    if let Some(licenses) = body.get("licenses").and_then(Value::as_array) {
        for (i, license) in licenses.iter().enumerate() {
            let license = license.as_str().unwrap_or("");
            if !matches_whole(LICENSE_REGEX, license) {
                return Err(format!(
                    "Invalid value for field 'resource.licenses[{i}]': '{license}'. The URL is malformed."
                ));
            }
        }
    }
    if let Some(labels) = body.get("labels").and_then(Value::as_object) {
        if labels.len() > 64 {
            return Err("Invalid value for field 'resource.labels': too many labels".into());
        }
        for (k, v) in labels {
            let v = v.as_str().unwrap_or("");
            if !is_valid_label_key(k) || !is_valid_label_value(v) {
                return Err(format!(
                    "Invalid value for field 'resource.labels': '{k}'='{v}'"
                ));
            }
        }
    }
    Ok(())
}

fn new_operation(
    app: &App,
    state: &mut FakeState,
    project: &str,
    kind: &str,
    name: &str,
    effect: Effect,
) -> Value {
    state.counter += 1;
    let op_name = format!("operation-{}-{}", state.counter, uuid::Uuid::new_v4());
    let json = json!({
        "kind": "compute#operation",
        "id": state.counter.to_string(),
        "name": op_name,
        "operationType": kind,
        "targetLink": image_link(&app.base_url, project, name),
        "status": "PENDING",
        "progress": 0,
        "selfLink": format!("{}/projects/{project}/global/operations/{op_name}", app.base_url),
    });
    state.operations.insert(
        op_name,
        FakeOperation {
            json: json.clone(),
            polls: 0,
            effect,
        },
    );
    json
}

/// Reads `rawDisk.source` from the storage emulator and checks it; the
/// tarball, when it is one GCE takes.
async fn check_source(app: &App, source: &str) -> Result<Vec<u8>, Value> {
    let fail = |code: &str, message: String| json!({ "code": code, "message": message });
    let Some(path) = source.strip_prefix("https://storage.googleapis.com/") else {
        return Err(fail(
            "INVALID_FIELD_VALUE",
            format!("rawDisk.source {source:?} is not a Cloud Storage URL"),
        ));
    };
    let Some((bucket, object)) = path.split_once('/') else {
        return Err(fail(
            "INVALID_FIELD_VALUE",
            format!("rawDisk.source {source:?} names no object"),
        ));
    };
    let encoded: String = url::form_urlencoded::byte_serialize(object.as_bytes()).collect();
    let url = format!(
        "{}/storage/v1/b/{bucket}/o/{}?alt=media",
        app.storage_base_url,
        encoded.replace('+', "%20")
    );
    let response = reqwest::get(&url)
        .await
        .map_err(|e| fail("RESOURCE_NOT_FOUND", format!("cannot read {source}: {e}")))?;
    if !response.status().is_success() {
        return Err(fail(
            "RESOURCE_NOT_FOUND",
            format!(
                "The resource '{source}' was not found (HTTP {})",
                response.status()
            ),
        ));
    }
    let data = response
        .bytes()
        .await
        .map_err(|e| fail("RESOURCE_NOT_FOUND", format!("cannot read {source}: {e}")))?;
    validate_gce_tarball(&data)
        .map(|_| data.to_vec())
        .map_err(|message| {
            fail(
                "INVALID_IMAGE_FILE",
                format!("Invalid image file {source}: {message}"),
            )
        })
}

async fn insert_image(
    State(app): State<App>,
    Path(project): Path<String>,
    Query(params): Query<Params>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let lose = {
        let mut state = lock(&app.state);
        state.insert_request_ids.push(params.request_id.clone());
        let lose = state.lose_insert_responses > 0;
        if lose {
            state.lose_insert_responses -= 1;
        }
        if let Some(id) = &params.request_id
            && let Some(op) = state.request_ids.get(id).cloned()
            && let Some(existing) = state.operations.get(&op)
        {
            if lose {
                return api_error(StatusCode::SERVICE_UNAVAILABLE, "backendError", "injected");
            }
            return axum::Json(existing.json.clone()).into_response();
        }
        if let Err(message) = check_fields(&body) {
            return api_error(StatusCode::BAD_REQUEST, "invalid", &message);
        }
        lose
    };
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let source = body
        .pointer("/rawDisk/source")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let checked = check_source(&app, &source).await;
    let mut state = lock(&app.state);
    let key = (project.clone(), name.clone());
    let pending = state.operations.values().any(|op| {
        matches!(&op.effect, Effect::Create { key: k, .. } if *k == key)
            && op.json["status"] != "DONE"
    });
    if state.images.contains_key(&key) || pending {
        return api_error(
            StatusCode::CONFLICT,
            "alreadyExists",
            &format!("The resource 'projects/{project}/global/images/{name}' already exists"),
        );
    }
    let effect = match checked {
        Ok(disk) => {
            let mut image = body.clone();
            if let Some(map) = image.as_object_mut() {
                map.insert("kind".into(), "compute#image".into());
                map.insert("status".into(), "READY".into());
                map.insert("diskSizeGb".into(), "1".into());
                map.insert("id".into(), image_id().into());
                map.insert(
                    "selfLink".into(),
                    image_link(&app.base_url, &project, &name).into(),
                );
            }
            Effect::Create {
                key,
                image,
                disk: Arc::new(disk),
            }
        }
        Err(error) => Effect::Fail {
            errors: vec![error],
        },
    };
    let op = new_operation(&app, &mut state, &project, "insert", &name, effect);
    if let (Some(id), Some(op_name)) = (&params.request_id, op["name"].as_str()) {
        state.request_ids.insert(id.clone(), op_name.to_string());
    }
    if lose {
        return api_error(StatusCode::SERVICE_UNAVAILABLE, "backendError", "injected");
    }
    axum::Json(op).into_response()
}

async fn get_image(
    State(app): State<App>,
    Path((project, name)): Path<(String, String)>,
) -> Response {
    let state = lock(&app.state);
    match state.images.get(&(project.clone(), name.clone())) {
        Some(image) => axum::Json(image.clone()).into_response(),
        None => api_error(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("The resource 'projects/{project}/global/images/{name}' was not found"),
        ),
    }
}

async fn delete_image(
    State(app): State<App>,
    Path((project, name)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> Response {
    let mut state = lock(&app.state);
    if let Some(id) = &params.request_id
        && let Some(op) = state.request_ids.get(id).cloned()
        && let Some(existing) = state.operations.get(&op)
    {
        return axum::Json(existing.json.clone()).into_response();
    }
    let key = (project.clone(), name.clone());
    if !state.images.contains_key(&key) {
        return api_error(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("The resource 'projects/{project}/global/images/{name}' was not found"),
        );
    }
    let op = new_operation(
        &app,
        &mut state,
        &project,
        "delete",
        &name,
        Effect::Delete { key },
    );
    if let (Some(id), Some(op_name)) = (&params.request_id, op["name"].as_str()) {
        state.request_ids.insert(id.clone(), op_name.to_string());
    }
    axum::Json(op).into_response()
}

async fn get_operation(
    State(app): State<App>,
    Path((_project, op_name)): Path<(String, String)>,
) -> Response {
    let mut guard = lock(&app.state);
    let state = &mut *guard;
    let hold = state.hold_operations;
    let Some(op) = state.operations.get_mut(&op_name) else {
        return api_error(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("The resource 'operations/{op_name}' was not found"),
        );
    };
    if op.json["status"] != "DONE" {
        op.polls += 1;
        if hold || op.polls < 2 {
            op.json["status"] = "RUNNING".into();
            op.json["progress"] = 50.into();
        } else {
            op.json["status"] = "DONE".into();
            op.json["progress"] = 100.into();
            match &op.effect {
                Effect::Create { key, image, disk } => {
                    state.images.insert(key.clone(), image.clone());
                    state.disks.insert(key.clone(), disk.clone());
                }
                Effect::Delete { key } => {
                    state.images.remove(key);
                    state.disks.remove(key);
                }
                Effect::Fail { errors } => {
                    op.json["error"] = json!({ "errors": errors });
                    op.json["httpErrorStatusCode"] = 400.into();
                    op.json["httpErrorMessage"] = "BAD REQUEST".into();
                }
            }
        }
    }
    axum::Json(op.json.clone()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licenses_are_checked_like_gce() {
        let with = |license: &str| json!({"name": "img", "licenses": [license]});
        for ok in [
            "projects/debian-cloud/global/licenses/debian-12-bookworm",
            "https://www.googleapis.com/compute/v1/projects/vm-options/global/licenses/enable-vmx",
            "https://compute.googleapis.com/compute/beta/projects/p/global/licenses/l",
            "projects/example.com:team-x/global/licenses/internal",
        ] {
            assert_eq!(check_fields(&with(ok)), Ok(()), "{ok}");
        }
        for bad in [
            "enable-vmx",
            "projects/p/global/licenses/Bad",
            "projects/p/global/images/i",
        ] {
            let err = check_fields(&with(bad)).unwrap_err();
            assert!(err.contains("resource.licenses[0]"), "{err}");
        }
    }
}
