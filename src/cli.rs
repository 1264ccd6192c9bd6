use crate::{config::DatabaseArgs, db, domain::accounts};

/// `keyledger grant-admin EMAIL`: make that account an administrator.
pub async fn grant_admin(
    database: &DatabaseArgs,
    email: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let db = db::connect_configured(database).await?;
    let account = accounts::grant_admin(&db, email)
        .await
        .map_err(|e| format!("{email}: {}", e.detail()))?;
    println!("{} is now an administrator", account.email);
    Ok(())
}
