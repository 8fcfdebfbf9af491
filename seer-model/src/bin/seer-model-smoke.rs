//! `seer-model-smoke`: trains a tiny network with libtorch and prints the loss, proving that
//! libtorch is provisioned and found at run time without `LD_LIBRARY_PATH`.

fn main() -> std::process::ExitCode {
    match seer_model::smoke(100) {
        Ok(r) => {
            println!(
                "{{\"loss_before\":{:.6},\"loss_after\":{:.6},\"parameters\":{}}}",
                r.loss_before, r.loss_after, r.parameters
            );
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("seer-model-smoke: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            std::process::ExitCode::FAILURE
        }
    }
}
