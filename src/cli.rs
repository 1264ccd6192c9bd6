use crate::{config::DatabaseArgs, db, domain::accounts};

/// `keyledger grant-admin EMAIL`: make that account an administrator.
pub async fn grant_admin(database: &DatabaseArgs, email: &str) -> Result<(), String> {
    let db = db::connect_configured(database)
        .await
        .map_err(|e| e.to_string())?;
    let account = accounts::grant_admin(&db, email)
        .await
        .map_err(|e| format!("{email}: {}", e.message()))?;
    println!("{} is now an administrator", account.email);
    Ok(())
}
