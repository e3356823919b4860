// What the test app does once it holds a token, written into <pre id="result"> as JSON for the
// test to read (the browser driver waits for that element to be filled).

function show(value) {
  const el = document.getElementById("result");
  el.textContent = JSON.stringify(value);
  el.setAttribute("data-done", "1");
}

function showResult(value) {
  show({ ok: true, ...value });
}

function showError(err) {
  show({ ok: false, error: String(err && err.message || err), status: err && err.status,
         stack: String(err && err.stack || "") });
}

function decodeJwtClaims(jwt) {
  const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
}

async function runApp(client) {
  const tr = client.state.tokenResponse;
  const patientId = client.patient.id;
  const patient = await client.request("Patient/" + patientId);
  const observations = await client.request("Observation?patient=" + encodeURIComponent(patientId));
  const out = {
    patientId,
    patientRead: { resourceType: patient.resourceType, id: patient.id },
    observationCount: (observations.entry || []).length,
    scope: tr.scope,
    tokenType: tr.token_type,
    expiresIn: tr.expires_in,
    hasRefreshToken: !!tr.refresh_token,
    needPatientBanner: tr.need_patient_banner,
    encounter: tr.encounter || null,
    idTokenFhirUser: tr.id_token ? decodeJwtClaims(tr.id_token).fhirUser : null,
    clientFhirUser: client.getFhirUser() || null,
    userRead: null,
    refresh: null,
  };
  if (/\buser\//.test(tr.scope || "")) {
    const me = await client.user.read();
    out.userRead = { resourceType: me.resourceType, id: me.id };
  }
  if (/\b(offline|online)_access\b/.test(tr.scope || "")) {
    const before = client.state.tokenResponse.access_token;
    await client.refresh();
    const after = client.state.tokenResponse.access_token;
    const again = await client.request("Patient/" + patientId);
    out.refresh = { newAccessToken: !!after && after !== before, scope: client.state.tokenResponse.scope,
                    patientReadAgain: again.id };
  }
  return out;
}
