//! The authority: the operator key and the accounts it signs, kept in a directory, and the
//! credentials it issues. `edgectl auth init` makes one; `edgectl site add` issues a site's
//! bundle from it.
//!
//! Accounts:
//! - `SYS`: nats-server's system account.
//! - `EDGE`: the control plane at the hub: the central services, operators' tools, and the leaf
//!   link of every site (each scoped to its own site, [`crate::scope::site_leaf`]).
//! - `TENANT_<tenant>`, one per tenant (`edgectl tenant add`): its users (application teams)
//!   reach only the control plane's `app.*` and `secret.*` operations, which the account
//!   imports under their plain subjects from `EDGE`'s `edge.v1.api.tenant.<tenant>.>`: the
//!   tenant a request is for comes from the credential. Blocking a tenant revokes every user.
//! - `ENROL`: one shared user (`enrol.creds`, in every site's bundle) that may only ask for a
//!   leaf-link renewal (`edge.v1.api.site.renew.<site>`, imported from `EDGE`); the proof is in
//!   the request ([`crate::leaf`]), so this credential opens nothing by itself.
//! - `SITE_<site>`, one per site: the site's own leaf server serves it (the site-manager and,
//!   later, the site's applications). Only that leaf server knows it, so what is issued in it
//!   opens nothing at the hub or at another site; the leaf link binds it to the site's `EDGE`
//!   user at the hub.
//!
//! Layout (seed files are mode 0600; a seed is never logged or put in an error):
//! ```text
//! operator.seed  operator.jwt
//! accounts/<NAME>.seed  accounts/<NAME>.jwt  accounts/<NAME>.signer.seed
//! creds/<user>.creds                 control-plane users (services, operators)
//! tls/ca.pem tls/ca.key tls/hub.pem tls/hub.key   the leaf links' CA, the hub's certificate
//! sites/<site>/leaf.creds            the site's leaf link (EDGE account, LEAFNODE only)
//! sites/<site>/ca.pem                the CA, to verify the hub
//! sites/<site>/enrol.creds           the shared enrolment user (renewals only)
//! sites/<site>/store.key store.env   the key of the leaf's encrypted JetStream store (0600)
//! sites/<site>/agent.creds           the site-manager (SITE_<site> account), shared by its hosts
//! sites/<site>/sys.creds             the site's system user (account updates at its leaf only)
//! sites/<site>/hosts/<host>/token    a host's one-time join token (`edgectl host invite`)
//! accounts/HOSTS.signer.seed         signs hosts' own credentials (the scheduler holds it)
//! accounts/SYS.sites.signer.seed     signs the sites' system users
//! tenants/<tenant>/<user>.creds      a tenant's users (TENANT_<tenant> account)
//! sites/<site>/auth.conf             the leaf server's trust: operator, accounts, leaf binding
//! hub-auth.conf                      the hub server's trust
//! ```

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use edge_types::Name;
use nkeys::KeyPair;

use crate::claims::{self, AccountLimits};
use crate::creds::Creds;
use crate::jwt::{self, Claims};
use crate::scope::{self, Scope};
use crate::AuthError;

pub const SYSTEM_ACCOUNT: &str = "SYS";
pub const CONTROL_ACCOUNT: &str = "EDGE";
pub const ENROL_ACCOUNT: &str = "ENROL";
/// Connections the enrolment account allows at once, across all sites: renewals and joins are
/// short and rare, so a flood from one stolen bundle cannot take many more.
const ENROL_CONNECTIONS: i64 = 256;
const TENANT_PREFIX: &str = "TENANT_";
/// The key that signs the credentials of hosts joining a site (listed by every site account).
const HOSTS_SIGNER: &str = "HOSTS.signer.seed";
/// The key that signs the sites' system users (listed by the sites' copy of `SYS` only).
const SITES_SYSTEM_SIGNER: &str = "SYS.sites.signer.seed";

/// The account name of a tenant.
fn tenant_account(tenant: &Name) -> String {
    format!("{TENANT_PREFIX}{tenant}")
}

/// An account's keys and its signed JWT.
pub struct Account {
    pub name: String,
    pub key: KeyPair,
    /// Signs the account's users, so that the account key itself can be kept offline.
    pub signer: KeyPair,
    pub jwt: String,
}

/// The operator and its accounts, backed by a directory.
pub struct Authority {
    dir: PathBuf,
    /// How long the leaf-link credentials it issues are valid ([`crate::leaf::DEFAULT_VALIDITY`]).
    pub leaf_validity: std::time::Duration,
    operator: KeyPair,
    operator_jwt: String,
    system: Account,
    control: Account,
}

/// What a site needs to join: its leaf link's credentials, its site-manager's, and its leaf
/// server's trust configuration.
pub struct SiteBundle {
    pub dir: PathBuf,
    pub leaf_creds: PathBuf,
    /// The shared enrolment user: renews the leaf link's credential without the link.
    pub enrol_creds: PathBuf,
    pub agent_creds: PathBuf,
    /// The site's system user: gives the leaf server the site account's newer JWTs (host
    /// revocations) and nothing else; refused at the hub.
    pub sys_creds: PathBuf,
    pub auth_conf: PathBuf,
    /// The CA certificate the leaf server verifies the hub's TLS certificate with.
    pub ca: PathBuf,
    /// The key the leaf server encrypts its JetStream store with (`LEAF_STORE_KEY`), and the
    /// same as an environment file (`LEAF_STORE_KEY=...`, for docker-compose).
    pub store_key: PathBuf,
    pub store_env: PathBuf,
    /// A site that joins by call-home: its one-time token (`site_to_join`).
    pub token: PathBuf,
    /// The key the site signs its applications' bus credentials with ([`crate::apps`]): one
    /// per site, listed by the site's account only.
    pub apps_signer: PathBuf,
}

impl SiteBundle {
    /// The leaf server's store key.
    pub fn read_store_key(&self) -> Result<String, AuthError> {
        read(&self.store_key)
    }
}

/// 32 random bytes, hex: a site's store key.
fn store_key() -> Result<String, AuthError> {
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key).map_err(|e| AuthError::Key(format!("no randomness: {e}")))?;
    Ok(key.iter().map(|b| format!("{b:02x}")).collect())
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuthError + '_ {
    move |source| AuthError::Io { path: path.to_path_buf(), source }
}

fn key_err(e: nkeys::error::Error) -> AuthError {
    AuthError::Key(e.to_string())
}

/// Writes `text` to `path` (mode 0600 when `secret`), replacing it atomically.
pub(crate) fn write(path: &Path, text: &str, secret: bool) -> Result<(), AuthError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(if secret { 0o600 } else { 0o644 });
        }
        let mut f = opts.open(&tmp).map_err(io(&tmp))?;
        f.write_all(text.as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn read(path: &Path) -> Result<String, AuthError> {
    Ok(std::fs::read_to_string(path).map_err(io(path))?.trim().to_string())
}

fn load_account(dir: &Path, name: &str) -> Result<Account, AuthError> {
    let base = dir.join("accounts");
    Ok(Account {
        name: name.to_string(),
        key: read_seed(&base.join(format!("{name}.seed")))?,
        signer: read_seed(&base.join(format!("{name}.signer.seed")))?,
        jwt: read(&base.join(format!("{name}.jwt")))?,
    })
}

/// What the control account exports: tenants' requests (each tenant's account imports its
/// own, [`tenant_imports`]).
fn control_exports() -> Vec<claims::Export> {
    vec![claims::Export {
        name: "tenant-api".into(),
        subject: edge_types::subject::tenant_api_all(),
        kind: claims::SERVICE.into(),
    }]
    .into_iter()
    .chain(crate::leaf::ENROL_OPS.map(|op| claims::Export {
        name: op.subject_for_any(),
        subject: op.subject_for_any(),
        kind: claims::SERVICE.into(),
    }))
    .collect()
}

/// nats-server's event of a refused connection (bad, expired or revoked credentials), which
/// the system account publishes per server and exports to the control account, where the
/// scheduler records each in AUDIT.
pub const AUTH_ERROR_EVENTS: &str = "$SYS.SERVER.*.CLIENT.AUTH.ERR";

fn system_exports() -> Vec<claims::Export> {
    vec![claims::Export { name: "auth-errors".into(), subject: AUTH_ERROR_EVENTS.into(), kind: claims::STREAM.into() }]
}

fn control_imports(system: &str) -> Vec<claims::Import> {
    vec![claims::Import {
        name: "auth-errors".into(),
        subject: AUTH_ERROR_EVENTS.into(),
        account: system.to_string(),
        local_subject: String::new(),
        kind: claims::STREAM.into(),
    }]
}

/// The enrolment account's only imports: renewals and joins, answered by the control plane.
fn enrol_imports(control: &str) -> Vec<claims::Import> {
    crate::leaf::ENROL_OPS
        .map(|op| claims::Import {
            name: op.subject_for_any(),
            subject: op.subject_for_any(),
            account: control.to_string(),
            local_subject: op.subject_for_any(),
            kind: claims::SERVICE.into(),
        })
        .to_vec()
}

/// A tenant's imports from the control account (`control`, its public key): every
/// [`ApiOp::tenant_scoped`](edge_types::subject::ApiOp::tenant_scoped) operation, sent on its
/// plain subject, arriving as the tenant's.
fn tenant_imports(tenant: &Name, control: &str) -> Vec<claims::Import> {
    use edge_types::subject::{tenant_api, ApiOp};
    ApiOp::ALL
        .into_iter()
        .filter(|op| op.tenant_scoped())
        .map(|op| claims::Import {
            name: op.subject(),
            subject: tenant_api(tenant, op),
            account: control.to_string(),
            local_subject: op.subject(),
            kind: claims::SERVICE.into(),
        })
        .collect()
}

/// A new user under a fresh key, signed by `signer` for the account `account` (public key).
fn issue_by(signer: &KeyPair, account: &str, name: &str, scope: Scope) -> Result<Creds, AuthError> {
    let user = KeyPair::new_user();
    let jwt = scope::sign_user(scope, signer, account, name, &user.public_key(), None, false)?;
    Ok(Creds { jwt, seed: user.seed().map_err(key_err)? })
}

/// Where a rotated credential's previous file is kept.
fn previous_of(path: &Path) -> PathBuf {
    path.with_extension("creds.previous")
}

fn read_seed(path: &Path) -> Result<KeyPair, AuthError> {
    KeyPair::from_seed(&read(path)?).map_err(|_| AuthError::Invalid(format!("{} holds no valid seed", path.display())))
}

impl Authority {
    /// Opens the authority in `dir`, making it (operator, system and control accounts) if the
    /// directory holds none yet.
    pub fn init(dir: &Path) -> Result<Self, AuthError> {
        if dir.join("operator.seed").exists() {
            return Self::open(dir);
        }
        let operator = KeyPair::new_operator();
        let mut this = Self {
            dir: dir.to_path_buf(),
            leaf_validity: crate::leaf::DEFAULT_VALIDITY,
            operator_jwt: String::new(),
            system: Self::blank_account(SYSTEM_ACCOUNT),
            control: Self::blank_account(CONTROL_ACCOUNT),
            operator,
        };
        this.system.jwt = this.sign_account(&this.system, AccountLimits::unlimited_without_jetstream(), |c| {
            c.exports = system_exports()
        })?;
        let system = this.system.key.public_key();
        this.control.jwt = this.sign_account(&this.control, AccountLimits::unlimited_with_jetstream(), |c| {
            c.exports = control_exports();
            c.imports = control_imports(&system);
        })?;
        this.operator_jwt = this.sign_operator()?;
        write(&dir.join("operator.seed"), &this.operator.seed().map_err(key_err)?, true)?;
        write(&dir.join("operator.jwt"), &this.operator_jwt, false)?;
        this.save_account(&this.system)?;
        this.save_account(&this.control)?;
        this.enrol()?;
        this.write_hub_conf()?;
        crate::tls::ensure_ca(&this.tls_dir())?;
        Ok(this)
    }

    /// Opens an existing authority.
    pub fn open(dir: &Path) -> Result<Self, AuthError> {
        let operator = read_seed(&dir.join("operator.seed"))?;
        let operator_jwt = read(&dir.join("operator.jwt"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            leaf_validity: crate::leaf::DEFAULT_VALIDITY,
            operator,
            operator_jwt,
            system: load_account(dir, SYSTEM_ACCOUNT)?,
            control: load_account(dir, CONTROL_ACCOUNT)?,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn operator_public_key(&self) -> String {
        self.operator.public_key()
    }

    /// The control-plane account's public key (`EDGE`).
    pub fn control_account(&self) -> String {
        self.control.key.public_key()
    }

    fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }

    /// Issues the hub's leafnode TLS certificate for the `names` sites dial (DNS names or IP
    /// addresses), signed by the authority's CA: `(certificate, key)` paths.
    pub fn hub_tls(&self, names: &[String]) -> Result<(PathBuf, PathBuf), AuthError> {
        crate::tls::issue_server(&self.tls_dir(), names)
    }

    /// Path of the hub server's trust configuration (included by `nats-config/hub.conf`).
    pub fn hub_auth_conf(&self) -> PathBuf {
        self.dir.join("hub-auth.conf")
    }

    fn blank_account(name: &str) -> Account {
        Account {
            name: name.to_string(),
            key: KeyPair::new_account(),
            signer: KeyPair::new_account(),
            jwt: String::new(),
        }
    }

    fn sign_operator(&self) -> Result<String, AuthError> {
        let pk = self.operator.public_key();
        let mut c = Claims {
            jti: String::new(),
            iat: now(),
            iss: pk.clone(),
            name: "edge".into(),
            sub: pk,
            exp: None,
            nats: claims::Operator {
                system_account: self.system.key.public_key(),
                kind: "operator".into(),
                version: 2,
                ..Default::default()
            },
        };
        jwt::encode(&mut c, &self.operator)
    }

    /// A new account's JWT: its limits, its own signing key, and what `more` adds (exports,
    /// imports, other signing keys), signed by the operator.
    fn sign_account(
        &self,
        account: &Account,
        limits: AccountLimits,
        more: impl FnOnce(&mut claims::Account),
    ) -> Result<String, AuthError> {
        let mut c = Claims {
            jti: String::new(),
            iat: now(),
            iss: self.operator.public_key(),
            name: account.name.clone(),
            sub: account.key.public_key(),
            exp: None,
            nats: claims::Account {
                limits,
                signing_keys: vec![account.signer.public_key()],
                kind: "account".into(),
                version: 2,
                ..Default::default()
            },
        };
        more(&mut c.nats);
        jwt::encode(&mut c, &self.operator)
    }

    /// `jwt` (an account's) with `change` made, re-signed by the operator and issued later
    /// than before (servers take the newer).
    fn resign(&self, jwt: &str, change: impl FnOnce(&mut claims::Account)) -> Result<String, AuthError> {
        let mut claims: Claims<claims::Account> = jwt::decode(jwt)?;
        change(&mut claims.nats);
        claims.iat = now().max(claims.iat + 1);
        jwt::encode(&mut claims, &self.operator)
    }

    fn save_account(&self, a: &Account) -> Result<(), AuthError> {
        let base = self.dir.join("accounts");
        write(&base.join(format!("{}.seed", a.name)), &a.key.seed().map_err(key_err)?, true)?;
        write(&base.join(format!("{}.signer.seed", a.name)), &a.signer.seed().map_err(key_err)?, true)?;
        write(&base.join(format!("{}.jwt", a.name)), &a.jwt, false)
    }

    /// A new user of `account` with `scope`, under a fresh key.
    fn issue(&self, account: &Account, name: &str, scope: Scope) -> Result<Creds, AuthError> {
        issue_by(&account.signer, &account.key.public_key(), name, scope)
    }

    /// A key of the authority's kept in `accounts/<file>`, made on first use.
    fn key_once(&self, file: &str) -> Result<KeyPair, AuthError> {
        let path = self.dir.join("accounts").join(file);
        if !path.exists() {
            write(&path, &KeyPair::new_account().seed().map_err(key_err)?, true)?;
        }
        read_seed(&path)
    }

    /// Path of the hosts' signing key seed, which every site account lists: what a scheduler
    /// that approves hosts' joins is given (`SCHEDULER_HOST_SIGNER`).
    pub fn host_signer_seed(&self) -> Result<PathBuf, AuthError> {
        self.key_once(HOSTS_SIGNER)?;
        Ok(self.dir.join("accounts").join(HOSTS_SIGNER))
    }

    /// The system account as the sites' leaf servers know it: also trusting the key that signs
    /// the sites' system users ([`scope::site_system`]), which the hub's copy does not list.
    fn sites_system_jwt(&self) -> Result<String, AuthError> {
        let signer = self.key_once(SITES_SYSTEM_SIGNER)?.public_key();
        self.resign(&self.system.jwt, |c| {
            if !c.signing_keys.contains(&signer) {
                c.signing_keys.push(signer);
            }
        })
    }

    /// Credentials of a control-plane user (`scheduler`, `secrets`, `admin`, ...), issued once
    /// and kept in `creds/<name>.creds`.
    pub fn control_user(&self, name: &Name) -> Result<PathBuf, AuthError> {
        self.issued_once(&format!("{name}.creds"), &self.control, name.as_str(), scope::control_user(name.as_str()))
    }

    /// Rotates control-plane user `name`: a new key and credentials file; the old file is kept
    /// as `<name>.creds.previous` (still valid until [`Authority::revoke_previous_control_user`]).
    /// Returns the new file's path.
    pub fn rotate_control_user(&self, name: &Name) -> Result<PathBuf, AuthError> {
        let path = self.dir.join("creds").join(format!("{name}.creds"));
        if !path.exists() {
            return Err(AuthError::Invalid(format!(
                "user {name} has no credential to rotate (edgectl auth user {name})"
            )));
        }
        let previous = previous_of(&path);
        std::fs::rename(&path, &previous).map_err(io(&path))?;
        write(&path, &self.issue(&self.control, name.as_str(), scope::control_user(name.as_str()))?.render(), true)?;
        Ok(path)
    }

    /// Revokes the key of `name`'s previous credential (after a rotation) in the control
    /// account and deletes the file; returns the re-signed account JWT for the hub.
    pub fn revoke_previous_control_user(&mut self, name: &Name) -> Result<String, AuthError> {
        let previous = previous_of(&self.dir.join("creds").join(format!("{name}.creds")));
        let creds = Creds::parse(&read(&previous)?)?;
        let old: Claims<claims::User> = jwt::decode(&creds.jwt)?;
        let jwt = self.set_user_revoked(&old.sub, true)?;
        std::fs::remove_file(&previous).map_err(io(&previous))?;
        Ok(jwt)
    }

    /// Credentials of the system account's operator user (`creds/sys.creds`): what pushes
    /// account updates (revocations) to the hub's resolver. Kept at the centre.
    pub fn system_user(&self) -> Result<PathBuf, AuthError> {
        self.issued_once("sys.creds", &self.system, "sys", scope::control_plane("system"))
    }

    /// `creds/<file>`: a user of `account` with `scope`, issued on the first call, and again
    /// when the file's permissions are not `scope`'s (issued by a version with other scopes).
    fn issued_once(&self, file: &str, account: &Account, name: &str, scope: Scope) -> Result<PathBuf, AuthError> {
        let path = self.dir.join("creds").join(file);
        let current = path.exists().then(|| -> Result<bool, AuthError> {
            let claims: Claims<claims::User> = jwt::decode(&Creds::parse(&read(&path)?)?.jwt)?;
            Ok(claims.nats.publish == scope.publish && claims.nats.subscribe == scope.subscribe)
        });
        if !matches!(current, Some(Ok(true))) {
            write(&path, &self.issue(account, name, scope)?.render(), true)?;
        }
        Ok(path)
    }

    /// The public key of a site's leaf-link user (its identity at the hub).
    pub fn site_leaf_user(&self, site: &Name) -> Result<String, AuthError> {
        let path = self.dir.join("sites").join(site.as_str()).join("leaf.creds");
        let creds = Creds::parse(&read(&path)?)?;
        let claims: Claims<claims::User> = jwt::decode(&creds.jwt)?;
        Ok(claims.sub)
    }

    /// Revokes (`true`) or reinstates (`false`) a user of the control account by its public
    /// key (a site's leaf link, [`Authority::site_leaf_user`] or its invitation's joined key; a
    /// rotated control-plane user's previous key), re-signs the account and returns its new
    /// JWT, which the hub must be given ([`edge_bus::claims::push_account_jwt`]): then the hub
    /// drops the user's connections and refuses them until reinstated. `hub-auth.conf` is
    /// rewritten too, so a hub started from it knows the revocation.
    pub fn set_user_revoked(&mut self, user: &str, revoked: bool) -> Result<String, AuthError> {
        if nkeys::KeyPair::from_public_key(user).is_err() || !user.starts_with('U') {
            return Err(AuthError::Invalid(format!("{user:?} is not a user's public key")));
        }
        let user = user.to_string();
        self.control.jwt = self.resign(&self.control.jwt, |c| {
            if revoked {
                // A revocation covers JWTs issued at or before its time.
                c.revocations.insert(user, now());
            } else {
                c.revocations.remove(&user);
            }
        })?;
        self.save_account(&self.control)?;
        self.write_hub_conf()?;
        Ok(self.control.jwt.clone())
    }

    /// The bundle of `site`: made on first call, the same files after.
    pub fn site(&self, site: &Name) -> Result<SiteBundle, AuthError> {
        self.bundle(site, true)
    }

    /// The bundle of a site that joins by call-home: everything but the leaf link's
    /// credential, which the site makes its key for and receives when approved, and a new
    /// one-time `token` (also written to the bundle's `token` file). The scheduler must be told
    /// the token's digest (`site.invite`, [`crate::leaf::token_digest`]).
    pub fn site_to_join(&self, site: &Name) -> Result<(SiteBundle, String), AuthError> {
        let bundle = self.bundle(site, false)?;
        let token = crate::leaf::new_token()?;
        write(&bundle.token, &token, true)?;
        Ok((bundle, token))
    }

    fn bundle(&self, site: &Name, with_leaf: bool) -> Result<SiteBundle, AuthError> {
        let dir = self.dir.join("sites").join(site.as_str());
        let bundle = SiteBundle {
            leaf_creds: dir.join("leaf.creds"),
            enrol_creds: dir.join("enrol.creds"),
            agent_creds: dir.join("agent.creds"),
            sys_creds: dir.join("sys.creds"),
            auth_conf: dir.join("auth.conf"),
            ca: dir.join("ca.pem"),
            store_key: dir.join("store.key"),
            store_env: dir.join("store.env"),
            token: dir.join("token"),
            apps_signer: dir.join("apps.signer.seed"),
            dir,
        };
        if !bundle.store_key.exists() {
            let key = store_key()?;
            write(&bundle.store_key, &key, true)?;
            write(&bundle.store_env, &format!("LEAF_STORE_KEY={key}\n"), true)?;
        }
        if !bundle.ca.exists() {
            let ca = crate::tls::ensure_ca(&self.tls_dir())?;
            let pem = std::fs::read_to_string(&ca).map_err(io(&ca))?;
            write(&bundle.ca, &pem, false)?;
        }
        if !bundle.enrol_creds.exists() {
            let (_, shared) = self.enrol()?;
            let text = std::fs::read_to_string(&shared).map_err(io(&shared))?;
            write(&bundle.enrol_creds, &text, true)?;
        }
        if !bundle.apps_signer.exists() {
            write(&bundle.apps_signer, &KeyPair::new_account().seed().map_err(key_err)?, true)?;
        }
        let apps = read_seed(&bundle.apps_signer)?.public_key();
        let fresh = !bundle.auth_conf.exists();
        let (account, resigned) = self.site_account_of(site, &apps)?;
        if resigned && !fresh {
            write(&bundle.auth_conf, &self.leaf_conf(&account)?, false)?;
        }
        if fresh {
            let agent = self.issue(&account, &format!("{site}-agent"), scope::site_agent(site))?;
            write(&bundle.agent_creds, &agent.render(), true)?;
        }
        if fresh && with_leaf {
            let leaf_key = KeyPair::new_user();
            let leaf = Creds {
                jwt: crate::leaf::issue(
                    &self.control.signer,
                    &self.control.key.public_key(),
                    site,
                    &leaf_key.public_key(),
                    self.leaf_validity,
                )?,
                seed: leaf_key.seed().map_err(key_err)?,
            };
            write(&bundle.leaf_creds, &leaf.render(), true)?;
        }
        if fresh || !bundle.sys_creds.exists() {
            // Made before hosts joined on their own: the leaf server learns the sites' system
            // signer and the site account its hosts' signer.
            let signer = self.key_once(SITES_SYSTEM_SIGNER)?;
            let sys = issue_by(
                &signer,
                &self.system.key.public_key(),
                &format!("{site}-system"),
                scope::site_system(&account.key.public_key()),
            )?;
            write(&bundle.sys_creds, &sys.render(), true)?;
            write(&bundle.auth_conf, &self.leaf_conf(&account)?, false)?;
        }
        Ok(bundle)
    }

    /// `site`'s account (`SITE_<site>`), made on first call, listing the hosts' signing key
    /// and the site's own key for its applications' credentials (`apps`). True when an
    /// existing account was signed again to list them.
    fn site_account_of(&self, site: &Name, apps: &str) -> Result<(Account, bool), AuthError> {
        let name = format!("SITE_{site}");
        let signers = [self.key_once(HOSTS_SIGNER)?.public_key(), apps.to_string()];
        let mut account = match load_account(&self.dir, &name) {
            Ok(a) => a,
            Err(_) => {
                let mut a = Self::blank_account(&name);
                let keys = signers.clone();
                a.jwt =
                    self.sign_account(&a, AccountLimits::unlimited_with_jetstream(), |c| c.signing_keys.extend(keys))?;
                self.save_account(&a)?;
                return Ok((a, false));
            }
        };
        // Made by a version before hosts joined with keys of their own, or apps had the bus.
        let current: Claims<claims::Account> = jwt::decode(&account.jwt)?;
        let missing: Vec<String> = signers.into_iter().filter(|k| !current.nats.signing_keys.contains(k)).collect();
        if missing.is_empty() {
            return Ok((account, false));
        }
        account.jwt = self.resign(&account.jwt, |c| c.signing_keys.extend(missing))?;
        self.save_account(&account)?;
        Ok((account, true))
    }

    /// Revokes (`true`) or reinstates (`false`) user `user` (public key: a host that joined
    /// with its own key) in `site`'s account; returns the account's new JWT, which the site's
    /// leader gives its leaf server (with the site's host policy). The site's `auth.conf` is
    /// rewritten too, for a leaf server started from a fresh bundle.
    pub fn set_site_user_revoked(&self, site: &Name, user: &str, revoked: bool) -> Result<String, AuthError> {
        if nkeys::KeyPair::from_public_key(user).is_err() || !user.starts_with('U') {
            return Err(AuthError::Invalid(format!("{user:?} is not a user's public key")));
        }
        let mut account = load_account(&self.dir, &format!("SITE_{site}"))
            .map_err(|_| AuthError::Invalid(format!("site {site} has no bundle here (edgectl site add {site})")))?;
        account.jwt = self.resign(&account.jwt, |c| {
            if revoked {
                c.revocations.insert(user.to_string(), now());
            } else {
                c.revocations.remove(user);
            }
        })?;
        self.save_account(&account)?;
        let auth_conf = self.dir.join("sites").join(site.as_str()).join("auth.conf");
        write(&auth_conf, &self.leaf_conf(&account)?, false)?;
        Ok(account.jwt)
    }

    /// Invites `host` to join `site` with a key of its own: a one-time token in the host's
    /// directory (`sites/<site>/hosts/<host>/token`, with the enrolment credential it asks
    /// with). Returns the directory, the token and the site account's public key (the
    /// invitation's `account`); the scheduler must be told the token's digest (`site.invite`).
    pub fn host_to_join(&self, site: &Name, host: &Name) -> Result<(PathBuf, String, String), AuthError> {
        let site_dir = self.dir.join("sites").join(site.as_str());
        if !site_dir.join("auth.conf").exists() {
            return Err(AuthError::Invalid(format!("site {site} has no bundle here (edgectl site add {site})")));
        }
        let bundle = self.bundle(site, false)?;
        let dir = site_dir.join("hosts").join(host.as_str());
        let token = crate::leaf::new_token()?;
        write(&dir.join("token"), &token, true)?;
        write(&dir.join("enrol.creds"), &read(&bundle.enrol_creds)?, true)?;
        Ok((dir, token, self.site_account(site)?))
    }

    /// Makes tenant `tenant`'s account (`TENANT_<tenant>`) if it has none, and makes sure the
    /// control account exports what tenants import. Returns the account JWTs the hub must be
    /// given ([`edge_bus::claims::push_account_jwt`], the control account's first).
    pub fn tenant(&mut self, tenant: &Name) -> Result<Vec<String>, AuthError> {
        let mut changed = Vec::new();
        self.ensure_control_exports()?;
        changed.push(self.control.jwt.clone());
        let name = tenant_account(tenant);
        let account = match load_account(&self.dir, &name) {
            Ok(a) => a,
            Err(_) => {
                let mut a = Self::blank_account(&name);
                let imports = tenant_imports(tenant, &self.control.key.public_key());
                a.jwt = self.sign_account(&a, AccountLimits::unlimited_without_jetstream(), |c| c.imports = imports)?;
                self.save_account(&a)?;
                a
            }
        };
        changed.push(account.jwt);
        self.write_hub_conf()?;
        Ok(changed)
    }

    /// Re-signs the control account if its exports or imports are not this version's (an
    /// authority made before tenants, renewals or the audit of refused connections existed),
    /// and the system account if it does not export the refused connections' events.
    fn ensure_control_exports(&mut self) -> Result<(), AuthError> {
        let current: Claims<claims::Account> = jwt::decode(&self.control.jwt)?;
        let imports = control_imports(&self.system.key.public_key());
        if current.nats.exports != control_exports() || current.nats.imports != imports {
            self.control.jwt = self.resign(&self.control.jwt, |c| {
                c.exports = control_exports();
                c.imports = imports;
            })?;
            self.save_account(&self.control)?;
        }
        let system: Claims<claims::Account> = jwt::decode(&self.system.jwt)?;
        if system.nats.exports != system_exports() {
            self.system.jwt = self.resign(&self.system.jwt, |c| c.exports = system_exports())?;
            self.save_account(&self.system)?;
        }
        Ok(())
    }

    /// The enrolment account (made on first call) and its shared user's credentials file.
    fn enrol(&self) -> Result<(Account, PathBuf), AuthError> {
        let imports = enrol_imports(&self.control.key.public_key());
        let account = match load_account(&self.dir, ENROL_ACCOUNT) {
            Ok(mut a) => {
                let current: Claims<claims::Account> = jwt::decode(&a.jwt)?;
                let limits = AccountLimits::enrolment(ENROL_CONNECTIONS);
                if current.nats.imports != imports || current.nats.limits != limits {
                    // Made by an older version: what the enrolment user may ask changed.
                    a.jwt = self.resign(&a.jwt, |c| {
                        c.imports = imports;
                        c.limits = limits;
                    })?;
                    self.save_account(&a)?;
                }
                a
            }
            Err(_) => {
                let mut a = Self::blank_account(ENROL_ACCOUNT);
                a.jwt = self.sign_account(&a, AccountLimits::enrolment(ENROL_CONNECTIONS), |c| c.imports = imports)?;
                self.save_account(&a)?;
                a
            }
        };
        let path = self.dir.join("creds").join("enrol.creds");
        if !path.exists() {
            write(&path, &self.issue(&account, "enrol", crate::leaf::enrol_scope())?.render(), true)?;
        }
        Ok((account, path))
    }

    /// The account JWTs a hub must know besides its preloaded trust: the control account and
    /// the enrolment account, made if missing (`edgectl auth init` and `site add` call it).
    pub fn ensure_enrolment(&mut self) -> Result<Vec<String>, AuthError> {
        self.ensure_control_exports()?;
        let (enrol, _) = self.enrol()?;
        self.write_hub_conf()?;
        Ok(vec![self.control.jwt.clone(), enrol.jwt])
    }

    /// Gives `site`'s leaf link a new JWT for the same key, valid for `valid` from now (what
    /// the scheduler does on a renewal; `edgectl site renew` by hand). Returns its path.
    pub fn renew_leaf(&self, site: &Name, valid: std::time::Duration) -> Result<PathBuf, AuthError> {
        let path = self.dir.join("sites").join(site.as_str()).join("leaf.creds");
        let creds = Creds::parse(&read(&path)?)?;
        let user =
            KeyPair::from_seed(&creds.seed).map_err(|_| AuthError::Invalid("leaf.creds holds no valid seed".into()))?;
        let jwt =
            crate::leaf::issue(&self.control.signer, &self.control.key.public_key(), site, &user.public_key(), valid)?;
        write(&path, &Creds { jwt, seed: creds.seed }.render(), true)?;
        Ok(path)
    }

    /// Path of the control account's signing key seed: what a scheduler that renews leaf-link
    /// credentials is given (`SCHEDULER_LEAF_SIGNER`).
    pub fn control_signer_seed(&self) -> PathBuf {
        self.dir.join("accounts").join(format!("{CONTROL_ACCOUNT}.signer.seed"))
    }

    /// Credentials of user `user` of tenant `tenant` (`tenants/<tenant>/<user>.creds`), issued
    /// once; the tenant must exist ([`Authority::tenant`]).
    pub fn tenant_user(&self, tenant: &Name, user: &Name) -> Result<PathBuf, AuthError> {
        let account = load_account(&self.dir, &tenant_account(tenant))
            .map_err(|_| AuthError::Invalid(format!("tenant {tenant} does not exist (edgectl tenant add {tenant})")))?;
        let path = self.dir.join("tenants").join(tenant.as_str()).join(format!("{user}.creds"));
        if !path.exists() {
            let scope = scope::tenant_user(&format!("{tenant}/{user}"));
            write(&path, &self.issue(&account, &format!("{tenant}-{user}"), scope)?.render(), true)?;
        }
        Ok(path)
    }

    /// Revokes (`true`) or reinstates (`false`) every user of tenant `tenant`; returns its
    /// re-signed account JWT for the hub. Users issued after a block are revoked only by the
    /// next block.
    pub fn set_tenant_revoked(&mut self, tenant: &Name, revoked: bool) -> Result<String, AuthError> {
        let mut account = load_account(&self.dir, &tenant_account(tenant))
            .map_err(|_| AuthError::Invalid(format!("tenant {tenant} does not exist")))?;
        account.jwt = self.resign(&account.jwt, |c| {
            if revoked {
                c.revocations.insert(claims::ALL_USERS.into(), now());
            } else {
                c.revocations.remove(claims::ALL_USERS);
            }
        })?;
        self.save_account(&account)?;
        self.write_hub_conf()?;
        Ok(account.jwt)
    }

    /// The tenants that have an account, sorted.
    pub fn tenants(&self) -> Result<Vec<Name>, AuthError> {
        let base = self.dir.join("accounts");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&base).map_err(io(&base))?.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            if let Some(t) = file.strip_prefix(TENANT_PREFIX).and_then(|f| f.strip_suffix(".jwt")) {
                out.extend(Name::new(t).ok());
            }
        }
        out.sort();
        Ok(out)
    }

    /// The public key of a site's own account (`SITE_<site>`), once its bundle exists.
    pub fn site_account(&self, site: &Name) -> Result<String, AuthError> {
        let path = self.dir.join("accounts").join(format!("SITE_{site}.seed"));
        Ok(read_seed(&path)?.public_key())
    }

    /// The hub server's trust: the operator, the system account and the control account,
    /// preloaded into the hub's own resolver (`nats-config/hub.conf`), which takes updates.
    fn hub_conf(&self) -> Result<String, AuthError> {
        let tenants: Vec<Account> =
            self.tenants()?.iter().map(|t| load_account(&self.dir, &tenant_account(t))).collect::<Result<_, _>>()?;
        let enrol = load_account(&self.dir, ENROL_ACCOUNT).ok();
        let mut accounts = vec![&self.control];
        accounts.extend(enrol.iter());
        accounts.extend(tenants.iter());
        Ok(trust_conf(&self.operator_jwt, &self.system, &self.system.jwt, &accounts, false))
    }

    fn write_hub_conf(&self) -> Result<(), AuthError> {
        write(&self.dir.join("hub-auth.conf"), &self.hub_conf()?, false)
    }

    /// A site leaf server's trust: the operator, the system account and the site's account,
    /// which the leaf link binds to the site's user at the hub.
    fn leaf_conf(&self, site_account: &Account) -> Result<String, AuthError> {
        let mut conf = trust_conf(&self.operator_jwt, &self.system, &self.sites_system_jwt()?, &[site_account], true);
        conf.push_str(&format!(
            "# The site's account: what crosses the leaf link.\nSITE_ACCOUNT: {}\n",
            site_account.key.public_key()
        ));
        Ok(conf)
    }
}

/// `operator`, `system_account` and the accounts' JWTs to preload into the resolver (with
/// `memory`, a fixed resolver of just those).
fn trust_conf(operator_jwt: &str, system: &Account, system_jwt: &str, accounts: &[&Account], memory: bool) -> String {
    let mut s = String::from("# Written by edgectl auth: whom this server trusts.\n");
    s.push_str(&format!("operator: \"{operator_jwt}\"\n"));
    s.push_str(&format!("system_account: {}\n", system.key.public_key()));
    if memory {
        s.push_str("resolver: MEMORY\n");
    }
    s.push_str("resolver_preload: {\n");
    s.push_str(&format!("  # {}\n  {}: \"{}\"\n", system.name, system.key.public_key(), system_jwt));
    for a in accounts {
        s.push_str(&format!("  # {}\n  {}: \"{}\"\n", a.name, a.key.public_key(), a.jwt));
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_idempotent_and_issues_verifiable_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let a = Authority::init(dir.path()).unwrap();
        let again = Authority::init(dir.path()).unwrap();
        assert_eq!(a.operator_public_key(), again.operator_public_key());

        let svc = a.control_user(&Name::new("scheduler").unwrap()).unwrap();
        let creds = Creds::parse(&std::fs::read_to_string(&svc).unwrap()).unwrap();
        let user: Claims<claims::User> = jwt::decode(&creds.jwt).unwrap();
        assert_eq!(user.nats.issuer_account, a.control_account());
        let account: Claims<claims::Account> =
            jwt::decode(&std::fs::read_to_string(dir.path().join("accounts/EDGE.jwt")).unwrap()).unwrap();
        assert_eq!(account.iss, a.operator_public_key());
        assert!(account.nats.signing_keys.contains(&user.iss));

        let site = Name::new("shop-1").unwrap();
        let b = a.site(&site).unwrap();
        let leaf = Creds::parse(&std::fs::read_to_string(&b.leaf_creds).unwrap()).unwrap();
        let leaf: Claims<claims::User> = jwt::decode(&leaf.jwt).unwrap();
        assert_eq!(leaf.nats.allowed_connection_types, vec!["LEAFNODE"]);
        let conf = std::fs::read_to_string(&b.auth_conf).unwrap();
        assert!(conf.contains(&a.site_account(&site).unwrap()));
        assert!(!conf.contains(&a.control_account()), "a site's leaf server must not know the control account");

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&b.agent_creds).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
