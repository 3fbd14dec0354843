// Asks a FHIR server which FHIR release it speaks, through the SMART JavaScript client
// (the `fhirclient` npm package) used as an app would: a client for the server's base URL,
// then getFhirVersion() and getFhirRelease(), both read from GET [base]/metadata.
//
//   node fhir_release.cjs BASE_URL   prints {"version": "4.0.1", "release": 4}
"use strict";

const smart = require("fhirclient");

async function main() {
  const base = process.argv[2];
  if (!base) {
    throw new Error("usage: node fhir_release.cjs BASE_URL");
  }
  // The Node entry wants the incoming request and response of a launch; a client made
  // straight from a base URL never reads them.
  const client = smart({ headers: {}, url: "/" }, {}).client(base);
  const version = await client.getFhirVersion();
  const release = await client.getFhirRelease();
  process.stdout.write(JSON.stringify({ version, release }) + "\n");
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error) + "\n");
  process.exit(1);
});
