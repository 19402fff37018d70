//! The GCE metadata server a local `googlecompute` build's guest talks to:
//! the instance's [`document`] (a JSON tree with GCE's path names), and the
//! [`answer`] to one HTTP request for it, as `metadata.google.internal`
//! gives it (header rules, directory listings, `?recursive=true`,
//! `?alt=json|text`, redirects, errors). Pure: the HTTP framing is in
//! `metadata_http`.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::plan::GceInstance;

/// The network the guest of a `googlecompute` build is on (QEMU user
/// networking): GCE's link-local range, so that the metadata address is
/// inside it.
pub const GUEST_NET: &str = "169.254.169.0/24";
/// The host side of the network: the guest's gateway.
pub const GATEWAY_IP: &str = "169.254.169.1";
/// The address QEMU's DHCP server hands the guest.
pub const GUEST_IP: &str = "169.254.169.15";
/// QEMU's DNS forwarder on that network.
pub const DNS_IP: &str = "169.254.169.253";
/// `metadata.google.internal`.
pub const METADATA_IP: &str = "169.254.169.254";
/// QEMU's MAC address for the first NIC when none is given.
pub const GUEST_MAC: &str = "52:54:00:12:34:56";
/// The `/etc/hosts` line that makes `metadata.google.internal` resolve in
/// the guest during the build; removed before shutdown.
pub const HOSTS_LINE: &str = "169.254.169.254 metadata.google.internal metadata  # kiln";

/// The body of the 404 for a service account's token or identity.
pub const NO_TOKENS: &str = "service account tokens and identities are not available in a local kiln build: the emulated instance has no credentials\n";

/// How long a `?wait_for_change=true` request without `timeout_sec` is held
/// when nothing changed (nothing ever does): a guest agent that polls in a
/// loop must not spin.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// The longest `timeout_sec` honoured.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Instance attributes that only the build sees: kiln runs the startup
/// script itself, over SSH; a guest agent reading it from the metadata
/// would run it a second time.
pub const BUILD_ONLY_ATTRIBUTES: [&str; 2] = ["startup-script", "startup-script-url"];

/// Directories whose children are numbered: JSON arrays in `recursive`
/// answers.
const LIST_DIRECTORIES: [&str; 7] = [
    "access-configs",
    "disks",
    "forwarded-ips",
    "ip-aliases",
    "licenses",
    "network-interfaces",
    "target-instance-ips",
];

/// Directories whose children's names are data (attribute keys, service
/// account emails), never camelCased.
const VERBATIM_DIRECTORIES: [&str; 2] = ["attributes", "service-accounts"];

/// The GCE hostname of an instance: `<name>.<zone>.c.<project>.internal`.
pub fn hostname(instance: &GceInstance) -> String {
    format!(
        "{}.{}.c.{}.internal",
        instance.name, instance.zone, instance.project_id
    )
}

/// The instance's service account email, as GCE names the default one.
pub fn service_account_email(instance: &GceInstance) -> Option<String> {
    if instance.no_service_account {
        return None;
    }
    Some(instance.service_account_email.clone().unwrap_or_else(|| {
        format!(
            "{}-compute@developer.gserviceaccount.com",
            instance.numeric_project_id
        )
    }))
}

/// The metadata tree of `instance`, with GCE's path names: objects are
/// directories (numbered ones, like `network-interfaces/0/`, have keys
/// `"0"`, `"1"`, ...), everything else a value. Build-only attributes are
/// left out (see [`BUILD_ONLY_ATTRIBUTES`]).
pub fn document(instance: &GceInstance) -> Value {
    let numeric = instance.numeric_project_id;
    let attributes: Map<String, Value> = instance
        .attributes
        .iter()
        .filter(|(key, _)| !BUILD_ONLY_ATTRIBUTES.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), Value::String(value.clone())))
        .collect();
    let mut accounts = Map::new();
    if let Some(email) = service_account_email(instance) {
        let account = json!({
            "aliases": ["default"],
            "email": email,
            "scopes": instance.scopes,
        });
        accounts.insert("default".to_string(), account.clone());
        accounts.insert(email, account);
    }
    let network = format!("projects/{numeric}/networks/{}", instance.network);
    json!({
        "instance": {
            "attributes": attributes,
            "cpu-platform": "Intel Broadwell",
            "description": "",
            "disks": {
                "0": {
                    "device-name": "persistent-disk-0",
                    "index": 0,
                    "interface": "SCSI",
                    "mode": "READ_WRITE",
                    "type": "PERSISTENT",
                }
            },
            "hostname": hostname(instance),
            "id": instance.id,
            "image": instance.image,
            "licenses": {},
            "machine-type": format!("projects/{numeric}/machineTypes/{}", instance.machine_type),
            "maintenance-event": "NONE",
            "name": instance.name,
            "network-interfaces": {
                "0": {
                    // No external address in a local build.
                    "access-configs": {},
                    "dns-servers": [DNS_IP],
                    "forwarded-ips": {},
                    "gateway": GATEWAY_IP,
                    "ip": GUEST_IP,
                    "ip-aliases": {},
                    "mac": GUEST_MAC,
                    "mtu": 1500,
                    "network": network,
                    "subnetmask": "255.255.255.0",
                    "target-instance-ips": {},
                }
            },
            "preempted": "FALSE",
            "scheduling": {
                "automatic-restart": "TRUE",
                "on-host-maintenance": "MIGRATE",
                "preemptible": "FALSE",
            },
            "service-accounts": accounts,
            "tags": instance.tags,
            "zone": format!("projects/{numeric}/zones/{}", instance.zone),
        },
        "project": {
            "attributes": {},
            "numeric-project-id": numeric,
            "project-id": instance.project_id,
        }
    })
}

/// One HTTP request, as far as the metadata server looks at it.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `GET`, `HEAD`, ...
    pub method: &'a str,
    /// The request target: path and query.
    pub target: &'a str,
    /// The headers, names in any case.
    pub headers: &'a [(String, String)],
}

impl Request<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// 200, 301, 403, 404, 405, 400.
    pub status: u16,
    /// The headers besides `Content-Length` and `Connection`.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// How long to hold the answer (`?wait_for_change=true` when nothing
    /// changed).
    pub delay: Duration,
}

impl Response {
    fn new(status: u16, content_type: &str, body: String) -> Response {
        Response {
            status,
            headers: vec![
                ("Metadata-Flavor".to_string(), "Google".to_string()),
                ("Content-Type".to_string(), content_type.to_string()),
                ("Server".to_string(), "Metadata Server for VM".to_string()),
                ("X-XSS-Protection".to_string(), "0".to_string()),
                ("X-Frame-Options".to_string(), "SAMEORIGIN".to_string()),
            ],
            body,
            delay: Duration::ZERO,
        }
    }

    fn text(body: String) -> Response {
        Response::new(200, "application/text", body)
    }

    fn json(value: &Value) -> Response {
        Response::new(200, "application/json", value.to_string())
    }

    fn error(status: u16, body: String) -> Response {
        Response::new(status, "text/html; charset=UTF-8", body)
    }

    /// A header of the response, by name in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The reason phrase of the status.
    pub fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            301 => "Moved Permanently",
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Error",
        }
    }
}

/// GCE's page for an error, with its wording.
fn error_page(status: u16, title: &str, message: &str) -> Response {
    Response::error(
        status,
        format!(
            "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error {status} ({title})!!1</title>\n  <p><b>{status}.</b> <ins>That\u{2019}s an error.</ins>\n  <p>{message}  <ins>That\u{2019}s all we know.</ins>\n"
        ),
    )
}

fn forbidden(path: &str, why: &str) -> Response {
    error_page(
        403,
        "Forbidden",
        &format!(
            "Your client does not have permission to get URL <code>{path}</code> from this server. {why}"
        ),
    )
}

fn not_found(path: &str) -> Response {
    error_page(
        404,
        "Not Found",
        &format!("The requested URL <code>{path}</code> was not found on this server."),
    )
}

/// The query parameters that matter.
#[derive(Debug, Default)]
struct Query {
    recursive: bool,
    alt: Option<String>,
    wait_for_change: bool,
    timeout_sec: Option<u64>,
    last_etag: Option<String>,
}

fn parse_query(query: &str) -> Query {
    let mut out = Query::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let truthy = value.eq_ignore_ascii_case("true") || value == "1";
        match key {
            "recursive" => out.recursive = truthy,
            "alt" => out.alt = Some(value.to_ascii_lowercase()),
            "wait_for_change" => out.wait_for_change = truthy,
            "timeout_sec" => out.timeout_sec = value.parse().ok(),
            "last_etag" => out.last_etag = Some(value.to_string()),
            _ => {}
        }
    }
    out
}

/// Answers one request for `doc` (see [`document`]).
pub fn answer(doc: &Value, request: &Request<'_>) -> Response {
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target, ""));
    if !matches!(request.method, "GET" | "HEAD") {
        let mut response = error_page(
            405,
            "Method Not Allowed",
            &format!(
                "The request method <code>{}</code> is inappropriate for the URL <code>{path}</code>.",
                request.method
            ),
        );
        response
            .headers
            .push(("Allow".to_string(), "GET, HEAD".to_string()));
        return response;
    }
    // The legacy versions and the top-level listings.
    match path {
        "/" => return Response::text("computeMetadata/\n".to_string()),
        "/computeMetadata" => return redirect(path),
        "/computeMetadata/" => return Response::text("v1/\n".to_string()),
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/computeMetadata/v1") else {
        return not_found(path);
    };
    if request.header("X-Forwarded-For").is_some() {
        return forbidden(path, "Request had an X-Forwarded-For header.");
    }
    if request.header("Metadata-Flavor") != Some("Google") {
        return forbidden(path, "Missing Metadata-Flavor:Google header.");
    }
    if rest.is_empty() {
        return redirect(path);
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return not_found(path);
    };
    let query = parse_query(query);
    let directory_request = rest.is_empty() || rest.ends_with('/');
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if let [.., "service-accounts", _, "token" | "identity"] = segments.as_slice() {
        return Response::error(404, NO_TOKENS.to_string());
    }
    let Some(node) = walk(doc, &segments) else {
        return not_found(path);
    };
    let is_directory = node.is_object();
    if is_directory && !directory_request {
        return redirect(path);
    }
    if !is_directory && directory_request {
        return not_found(path);
    }
    let key = segments.last().copied().unwrap_or_default();
    let json_wanted = match query.alt.as_deref() {
        Some("json") => true,
        Some("text") => false,
        Some(_) => {
            return error_page(
                400,
                "Bad Request",
                "Your client has issued a malformed or illegal request. Invalid alt parameter.",
            );
        }
        None => is_directory && query.recursive,
    };
    let mut response = if is_directory && query.recursive {
        if json_wanted {
            Response::json(&recursive_json(key, node))
        } else {
            let mut lines = Vec::new();
            flat_text("", node, &mut lines);
            Response::text(lines.join(""))
        }
    } else if is_directory {
        let names = listing(node);
        if json_wanted {
            Response::json(&Value::from(names))
        } else {
            Response::text(names.iter().map(|n| format!("{n}\n")).collect())
        }
    } else if json_wanted {
        Response::json(node)
    } else {
        Response::text(leaf_text(key, node))
    };
    let etag = etag(&response.body);
    if query.wait_for_change && query.last_etag.as_deref().is_none_or(|last| last == etag) {
        response.delay = query
            .timeout_sec
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_WAIT)
            .min(MAX_WAIT);
    }
    response.headers.push(("ETag".to_string(), etag));
    response
}

fn redirect(path: &str) -> Response {
    let location = format!("http://metadata.google.internal{path}/");
    let mut response = error_page(
        301,
        "Moved Permanently",
        &format!("The document has moved <a href=\"{location}\">here</a>."),
    );
    response.headers.push(("Location".to_string(), location));
    response
}

fn walk<'a>(doc: &'a Value, segments: &[&str]) -> Option<&'a Value> {
    segments
        .iter()
        .try_fold(doc, |node, segment| node.as_object()?.get(*segment))
}

/// A directory's children, sorted, sub-directories with a trailing `/`.
fn listing(node: &Value) -> Vec<String> {
    let Some(map) = node.as_object() else {
        return Vec::new();
    };
    let mut names: Vec<String> = map
        .iter()
        .map(|(name, child)| {
            if child.is_object() {
                format!("{name}/")
            } else {
                name.clone()
            }
        })
        .collect();
    sort_names(&mut names);
    names
}

/// Numbered children in numeric order, the rest alphabetically.
fn sort_names(names: &mut [String]) {
    names.sort_by(|a, b| {
        let number = |s: &str| s.trim_end_matches('/').parse::<u64>().ok();
        match (number(a), number(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => a.cmp(b),
        }
    });
}

/// A value as text: strings bare, lists one item a line, `tags` as JSON.
fn leaf_text(key: &str, value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) if key != "tags" => items
            .iter()
            .map(|item| format!("{}\n", leaf_text("", item)))
            .collect(),
        other => other.to_string(),
    }
}

/// `?recursive=true&alt=text`: one `path value` line per value.
fn flat_text(prefix: &str, node: &Value, lines: &mut Vec<String>) {
    match node.as_object() {
        Some(map) => {
            let mut names: Vec<String> = map.keys().cloned().collect();
            sort_names(&mut names);
            for name in names {
                let child = &map[&name];
                let path = if child.is_object() {
                    format!("{prefix}{name}/")
                } else {
                    format!("{prefix}{name}")
                };
                flat_text(&path, child, lines);
            }
        }
        None => {
            let key = prefix.rsplit('/').next().unwrap_or_default();
            let text = match node {
                Value::Array(_) => node.to_string(),
                _ => leaf_text(key, node),
            };
            lines.push(format!("{prefix} {text}\n"));
        }
    }
}

/// `?recursive=true`: the subtree as JSON, keys camelCased (but for
/// attribute names and service account emails), numbered directories as
/// arrays.
fn recursive_json(key: &str, node: &Value) -> Value {
    let Some(map) = node.as_object() else {
        return node.clone();
    };
    let mut names: Vec<String> = map.keys().cloned().collect();
    sort_names(&mut names);
    if LIST_DIRECTORIES.contains(&key) {
        return Value::Array(
            names
                .iter()
                .map(|name| recursive_json("", &map[name]))
                .collect(),
        );
    }
    let verbatim = VERBATIM_DIRECTORIES.contains(&key);
    let mut out = Map::new();
    for name in names {
        let child = &map[&name];
        let shown = if verbatim {
            name.clone()
        } else {
            camel_case(&name)
        };
        // Children of a verbatim directory are named by data; their own
        // children are ordinary (a service account's `email`).
        let child_key = if verbatim { "" } else { name.as_str() };
        out.insert(shown, recursive_json(child_key, child));
    }
    Value::Object(out)
}

/// `machine-type` -> `machineType`.
fn camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A short hash of a body, as the `ETag` of its answer.
fn etag(body: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(body.as_bytes());
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn instance() -> GceInstance {
        GceInstance {
            project_id: "my-proj".into(),
            numeric_project_id: 123456789012,
            zone: "us-central1-a".into(),
            name: "packer-abc".into(),
            id: 4242,
            machine_type: "n1-standard-1".into(),
            image: "projects/ubuntu-os-cloud/global/images/ubuntu-2204-lts".into(),
            tags: vec!["web".into(), "ssh".into()],
            labels: BTreeMap::new(),
            attributes: BTreeMap::from([
                ("ssh-keys".into(), "packer:ssh-ed25519 AAAA kiln".into()),
                ("role".into(), "web".into()),
                ("startup-script".into(), "echo hi".into()),
            ]),
            network: "default".into(),
            subnetwork: None,
            service_account_email: None,
            no_service_account: false,
            scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
            ssh_username: "packer".into(),
        }
    }

    fn get(path: &str) -> Response {
        let headers = vec![("metadata-flavor".to_string(), "Google".to_string())];
        get_with(path, &headers)
    }

    fn get_with(path: &str, headers: &[(String, String)]) -> Response {
        answer(
            &document(&instance()),
            &Request {
                method: "GET",
                target: path,
                headers,
            },
        )
    }

    fn ok(path: &str) -> String {
        let response = get(path);
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        response.body
    }

    #[test]
    fn instance_values_as_text() {
        assert_eq!(ok("/computeMetadata/v1/instance/name"), "packer-abc");
        assert_eq!(ok("/computeMetadata/v1/instance/id"), "4242");
        assert_eq!(
            ok("/computeMetadata/v1/instance/hostname"),
            "packer-abc.us-central1-a.c.my-proj.internal"
        );
        assert_eq!(
            ok("/computeMetadata/v1/instance/zone"),
            "projects/123456789012/zones/us-central1-a"
        );
        assert_eq!(
            ok("/computeMetadata/v1/instance/machine-type"),
            "projects/123456789012/machineTypes/n1-standard-1"
        );
        assert_eq!(ok("/computeMetadata/v1/instance/tags"), r#"["web","ssh"]"#);
        assert_eq!(
            ok("/computeMetadata/v1/instance/attributes/ssh-keys"),
            "packer:ssh-ed25519 AAAA kiln"
        );
        assert_eq!(
            ok("/computeMetadata/v1/instance/network-interfaces/0/ip"),
            GUEST_IP
        );
        assert_eq!(
            ok("/computeMetadata/v1/instance/network-interfaces/0/network"),
            "projects/123456789012/networks/default"
        );
        assert_eq!(ok("/computeMetadata/v1/project/project-id"), "my-proj");
        assert_eq!(
            ok("/computeMetadata/v1/project/numeric-project-id"),
            "123456789012"
        );
    }

    #[test]
    fn responses_carry_gce_headers() {
        let response = get("/computeMetadata/v1/instance/name");
        assert_eq!(response.header("metadata-flavor"), Some("Google"));
        assert_eq!(response.header("Server"), Some("Metadata Server for VM"));
        assert_eq!(response.header("Content-Type"), Some("application/text"));
        assert!(response.header("ETag").is_some());
        assert_eq!(response.delay, Duration::ZERO);
    }

    #[test]
    fn the_flavor_header_is_required() {
        let response = get_with("/computeMetadata/v1/instance/name", &[]);
        assert_eq!(response.status, 403);
        assert!(
            response
                .body
                .contains("Missing Metadata-Flavor:Google header.")
        );
        assert_eq!(response.header("Metadata-Flavor"), Some("Google"));
        let wrong = vec![("Metadata-Flavor".to_string(), "google".to_string())];
        assert_eq!(
            get_with("/computeMetadata/v1/instance/name", &wrong).status,
            403
        );
    }

    #[test]
    fn forwarded_requests_are_refused() {
        let headers = vec![
            ("Metadata-Flavor".to_string(), "Google".to_string()),
            ("X-Forwarded-For".to_string(), "10.1.1.1".to_string()),
        ];
        let response = get_with("/computeMetadata/v1/instance/name", &headers);
        assert_eq!(response.status, 403);
        assert!(response.body.contains("X-Forwarded-For"));
    }

    #[test]
    fn directories_list_their_children() {
        assert_eq!(ok("/"), "computeMetadata/\n");
        assert_eq!(ok("/computeMetadata/"), "v1/\n");
        assert_eq!(ok("/computeMetadata/v1/"), "instance/\nproject/\n");
        let listing = ok("/computeMetadata/v1/instance/");
        let lines: Vec<&str> = listing.lines().collect();
        for expected in [
            "attributes/",
            "hostname",
            "id",
            "machine-type",
            "name",
            "network-interfaces/",
            "service-accounts/",
            "tags",
            "zone",
        ] {
            assert!(lines.contains(&expected), "{expected} in {listing}");
        }
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(lines, sorted);
        assert_eq!(
            ok("/computeMetadata/v1/instance/attributes/"),
            "role\nssh-keys\n"
        );
        assert_eq!(
            ok("/computeMetadata/v1/instance/network-interfaces/"),
            "0/\n"
        );
        assert_eq!(
            ok("/computeMetadata/v1/project/"),
            "attributes/\nnumeric-project-id\nproject-id\n"
        );
        assert_eq!(
            ok("/computeMetadata/v1/instance/service-accounts/"),
            "123456789012-compute@developer.gserviceaccount.com/\ndefault/\n"
        );
        assert_eq!(
            ok("/computeMetadata/v1/instance/service-accounts/default/"),
            "aliases\nemail\nscopes\n"
        );
        let json = get("/computeMetadata/v1/instance/attributes/?alt=json");
        assert_eq!(json.body, r#"["role","ssh-keys"]"#);
    }

    #[test]
    fn startup_script_is_not_served() {
        assert_eq!(
            get("/computeMetadata/v1/instance/attributes/startup-script").status,
            404
        );
    }

    #[test]
    fn a_directory_without_slash_redirects() {
        let response = get("/computeMetadata/v1/instance");
        assert_eq!(response.status, 301);
        assert_eq!(
            response.header("Location"),
            Some("http://metadata.google.internal/computeMetadata/v1/instance/")
        );
        assert_eq!(get("/computeMetadata/v1").status, 301);
        assert_eq!(get("/computeMetadata").status, 301);
        assert_eq!(
            get("/computeMetadata/v1/instance/network-interfaces/0").status,
            301
        );
    }

    #[test]
    fn unknown_paths_and_values_with_slash_are_404() {
        for path in [
            "/computeMetadata/v1/instance/nope",
            "/computeMetadata/v1/instance/name/",
            "/computeMetadata/v1/instance/attributes/missing",
            "/computeMetadata/v1beta1/instance/name",
            "/0.1/meta-data/",
            "/computeMetadata/v2/",
            "/computeMetadata/v1x/",
        ] {
            assert_eq!(get(path).status, 404, "{path}");
        }
    }

    #[test]
    fn tokens_are_not_available() {
        for path in [
            "/computeMetadata/v1/instance/service-accounts/default/token",
            "/computeMetadata/v1/instance/service-accounts/default/identity?audience=x",
        ] {
            let response = get(path);
            assert_eq!(response.status, 404);
            assert!(
                response
                    .body
                    .contains("not available in a local kiln build")
            );
        }
    }

    #[test]
    fn recursive_json_is_camel_cased() {
        let body = ok("/computeMetadata/v1/instance/?recursive=true");
        let value: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["name"], "packer-abc");
        assert_eq!(value["id"], 4242);
        assert_eq!(
            value["machineType"],
            "projects/123456789012/machineTypes/n1-standard-1"
        );
        assert_eq!(value["networkInterfaces"][0]["ip"], GUEST_IP);
        assert_eq!(value["networkInterfaces"][0]["accessConfigs"], json!([]));
        assert_eq!(value["networkInterfaces"][0]["subnetmask"], "255.255.255.0");
        assert_eq!(
            value["attributes"]["ssh-keys"],
            "packer:ssh-ed25519 AAAA kiln"
        );
        assert_eq!(
            value["serviceAccounts"]["default"]["email"],
            "123456789012-compute@developer.gserviceaccount.com"
        );
        assert_eq!(
            value["serviceAccounts"]["default"]["aliases"],
            json!(["default"])
        );
        assert_eq!(value["tags"], json!(["web", "ssh"]));
        assert_eq!(value["disks"][0]["deviceName"], "persistent-disk-0");
        assert!(value.get("machine-type").is_none());
        let project: Value =
            serde_json::from_str(&ok("/computeMetadata/v1/project/?recursive=true")).unwrap();
        assert_eq!(
            project,
            json!({"attributes": {}, "numericProjectId": 123456789012u64, "projectId": "my-proj"})
        );
        let response = get("/computeMetadata/v1/?recursive=true");
        assert_eq!(response.header("Content-Type"), Some("application/json"));
        let all: Value = serde_json::from_str(&response.body).unwrap();
        assert_eq!(all["instance"]["name"], "packer-abc");
        assert_eq!(all["project"]["projectId"], "my-proj");
    }

    #[test]
    fn attribute_directories_keep_their_names_recursively() {
        let body = ok("/computeMetadata/v1/instance/attributes/?recursive=true");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"role": "web", "ssh-keys": "packer:ssh-ed25519 AAAA kiln"})
        );
    }

    #[test]
    fn alt_selects_text_or_json() {
        assert_eq!(
            ok("/computeMetadata/v1/instance/name?alt=json"),
            "\"packer-abc\""
        );
        assert_eq!(ok("/computeMetadata/v1/instance/id?alt=json"), "4242");
        assert_eq!(
            ok("/computeMetadata/v1/instance/service-accounts/default/scopes"),
            "https://www.googleapis.com/auth/cloud-platform\n"
        );
        let text = ok("/computeMetadata/v1/instance/attributes/?recursive=true&alt=text");
        assert_eq!(text, "role web\nssh-keys packer:ssh-ed25519 AAAA kiln\n");
        let text = ok("/computeMetadata/v1/project/?recursive=true&alt=text");
        assert_eq!(
            text,
            "numeric-project-id 123456789012\nproject-id my-proj\n"
        );
        assert_eq!(get("/computeMetadata/v1/instance/name?alt=xml").status, 400);
    }

    #[test]
    fn wait_for_change_holds_an_unchanged_answer() {
        let first = get("/computeMetadata/v1/instance/attributes/?recursive=true");
        let etag = first.header("ETag").unwrap().to_string();
        let held = get(&format!(
            "/computeMetadata/v1/instance/attributes/?recursive=true&wait_for_change=true&last_etag={etag}&timeout_sec=5"
        ));
        assert_eq!(held.delay, Duration::from_secs(5));
        assert_eq!(held.body, first.body);
        let stale = get(
            "/computeMetadata/v1/instance/attributes/?recursive=true&wait_for_change=true&last_etag=0",
        );
        assert_eq!(stale.delay, Duration::ZERO);
        let default = get("/computeMetadata/v1/instance/name?wait_for_change=true");
        assert_eq!(default.delay, DEFAULT_WAIT);
    }

    #[test]
    fn only_reads_are_allowed() {
        let headers = vec![("Metadata-Flavor".to_string(), "Google".to_string())];
        let response = answer(
            &document(&instance()),
            &Request {
                method: "POST",
                target: "/computeMetadata/v1/instance/name",
                headers: &headers,
            },
        );
        assert_eq!(response.status, 405);
    }

    #[test]
    fn no_service_account_lists_none() {
        let mut instance = instance();
        instance.no_service_account = true;
        let headers = vec![("Metadata-Flavor".to_string(), "Google".to_string())];
        let response = answer(
            &document(&instance),
            &Request {
                method: "GET",
                target: "/computeMetadata/v1/instance/service-accounts/",
                headers: &headers,
            },
        );
        assert_eq!(response.body, "");
        instance.no_service_account = false;
        instance.service_account_email = Some("builder@p.iam.gserviceaccount.com".into());
        assert_eq!(
            service_account_email(&instance).as_deref(),
            Some("builder@p.iam.gserviceaccount.com")
        );
    }

    #[test]
    fn camel_case_names() {
        assert_eq!(camel_case("numeric-project-id"), "numericProjectId");
        assert_eq!(camel_case("name"), "name");
    }
}
