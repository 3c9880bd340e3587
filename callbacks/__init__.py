"""Cross-cutting callbacks: export in Hugging Face format, throughput, NaN guard."""
