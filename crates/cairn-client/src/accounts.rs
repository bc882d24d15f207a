//! Accounts, passwords, API keys and role grants.

use cairn_api_types as api;
use reqwest::Method;
use serde::Serialize;

use crate::{Client, ClientError, seg};

/// Which keys `GET /api/v1/keys` lists.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KeyListOptions {
    /// The keys of this account (administrators, or yourself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The keys of every account (administrators).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

#[derive(Serialize)]
struct PageQuery<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    page_token: Option<&'a str>,
}

#[derive(Serialize)]
struct GrantQuery<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
}

impl Client {
    /// `GET /api/v1/users`: one page of accounts.
    pub async fn list_users(
        &self,
        limit: Option<usize>,
        page_token: Option<&str>,
    ) -> Result<api::UserList, ClientError> {
        self.get_q("/api/v1/users", &PageQuery { limit, page_token }).await
    }

    /// `GET /api/v1/users/{username}`.
    pub async fn get_user(&self, username: &str) -> Result<api::User, ClientError> {
        self.get(&format!("/api/v1/users/{}", seg(username))).await
    }

    /// `PATCH /api/v1/users/{username}`.
    pub async fn update_user(&self, username: &str, req: &api::UpdateUser) -> Result<api::User, ClientError> {
        self.write(Method::PATCH, &format!("/api/v1/users/{}", seg(username)), req).await
    }

    /// `DELETE /api/v1/users/{username}`.
    pub async fn delete_user(&self, username: &str) -> Result<(), ClientError> {
        self.delete(&format!("/api/v1/users/{}", seg(username))).await
    }

    /// `POST /api/v1/users/{username}/password` (administrators).
    pub async fn set_user_password(&self, username: &str, new_password: &str) -> Result<(), ClientError> {
        let body = api::SetPassword { new_password: new_password.to_owned() };
        self.send::<_, (), serde_json::Value>(
            Method::POST,
            &format!("/api/v1/users/{}/password", seg(username)),
            None,
            Some(&body),
        )
        .await?;
        Ok(())
    }

    /// `POST /api/v1/me/password`.
    pub async fn change_password(&self, current_password: &str, new_password: &str) -> Result<(), ClientError> {
        let body = api::ChangePassword {
            current_password: current_password.to_owned(),
            new_password: new_password.to_owned(),
        };
        self.send::<_, (), serde_json::Value>(Method::POST, "/api/v1/me/password", None, Some(&body)).await?;
        Ok(())
    }

    /// `GET /api/v1/keys`.
    pub async fn list_keys(&self, opts: &KeyListOptions) -> Result<api::ApiKeyList, ClientError> {
        self.get_q("/api/v1/keys", opts).await
    }

    /// `DELETE /api/v1/keys/{id}`.
    pub async fn revoke_key(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&format!("/api/v1/keys/{}", seg(id))).await
    }

    /// `POST /api/v1/keys/{id}/rotate`.
    pub async fn rotate_key(&self, id: &str, overlap_secs: Option<u64>) -> Result<api::RotatedApiKey, ClientError> {
        self.write(Method::POST, &format!("/api/v1/keys/{}/rotate", seg(id)), &api::RotateApiKey { overlap_secs }).await
    }

    /// `GET /api/v1/grants`, optionally of one account and/or in one namespace (`-` for
    /// global grants only).
    pub async fn list_grants(
        &self,
        username: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<api::RoleGrantList, ClientError> {
        self.get_q("/api/v1/grants", &GrantQuery { username, namespace }).await
    }

    /// `POST /api/v1/grants`.
    pub async fn create_grant(&self, req: &api::CreateRoleGrant) -> Result<api::RoleGrant, ClientError> {
        self.write(Method::POST, "/api/v1/grants", req).await
    }

    /// `DELETE /api/v1/grants/{id}`.
    pub async fn delete_grant(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&format!("/api/v1/grants/{}", seg(id))).await
    }
}
