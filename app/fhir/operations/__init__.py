"""FHIR operations ($twin, $simulate, ...): one module each, called from routes through the pipeline."""
