// Workload credentials: a key made here, a certificate from a CertificateSource, renewed at 70 % of its lifetime and swapped atomically.
import { createPrivateKey, generateKeyPair, X509Certificate } from 'node:crypto';
import { promisify } from 'node:util';
import type { Clock, Random } from '../api/clock.js';
import type { Logger } from '../api/log.js';
import type { CertificateAuthority } from '../certs/ca.js';
import { signCsr } from '../certs/issue.js';
import { startRotation, type Rotation, type Validity } from '../certs/rotation.js';
import { spiffeUri, type SpiffeId } from '../certs/spiffe.js';
import { createCsr } from '../certs/workload.js';
import type { Telemetry } from './telemetry.js';
import { Watch } from './watch.js';

const generateKeyPairAsync = promisify(generateKeyPair);

export interface Credentials {
  readonly keyPem: string;
  readonly certPem: string;
  /** The mesh CA bundle peers are verified against. */
  readonly caPem: string;
  readonly id: SpiffeId;
  readonly uri: string;
  readonly serial: string;
  /** Unix ms. */
  readonly notBefore: number;
  readonly notAfter: number;
}

/**
 * Where certificates come from. Standalone mode signs with the CA in --dir; dynamic mode (next issue) sends the CSR
 * to the control plane. Either way the private key never leaves this process.
 */
export interface CertificateSource {
  sign(csrPem: string, id: SpiffeId): Promise<{ certPem: string; caPem: string }>;
}

/** Standalone mode: the CA files are on this machine; TTL from MeshConfig. */
export function localCaSource(ca: CertificateAuthority, ttlMs: () => number): CertificateSource {
  return {
    sign: async (csrPem, id) => ({ certPem: signCsr(ca, csrPem, { id, ttlMs: ttlMs() }), caPem: ca.certPem }),
  };
}

export interface CredentialDeps {
  readonly clock: Clock;
  /** Wall time in unix ms: certificate validity is absolute. */
  readonly wallNow: () => number;
  readonly random: Random;
  readonly log: Logger;
  readonly telemetry: Telemetry;
}

export class CertificateManager {
  readonly credentials = new Watch<Credentials | undefined>(undefined);
  private rotation: Rotation | undefined;

  constructor(private readonly source: CertificateSource, private readonly id: SpiffeId, private readonly deps: CredentialDeps) {}

  get rotations(): number {
    return this.rotation?.rotations ?? 0;
  }

  /** Obtains the first certificate (rejecting if that fails, so a sidecar never serves without one), then rotates. */
  async start(): Promise<void> {
    const first = await this.obtain();
    const { clock, random, wallNow, log } = this.deps;
    this.rotation = startRotation({
      current: first, renew: () => this.obtain(), clock, random, wallNow,
      onError: (err, failures, retryInMs) => {
        const left = (this.credentials.get()?.notAfter ?? 0) - wallNow();
        log.error('certificate_renewal_failed', { error: err, attempt: failures, retry_in_ms: retryInMs, expires_in_ms: left });
      },
    });
  }

  /** New key (generated off the event loop), CSR, signature, check, atomic swap. */
  private async obtain(): Promise<Validity> {
    const { privateKey } = await generateKeyPairAsync('rsa', {
      modulusLength: 2048,
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    });
    const csr = createCsr({ keyPem: privateKey }, this.id);
    const issuedAt = this.deps.wallNow();
    const { certPem, caPem } = await this.source.sign(csr, this.id);
    const cert = new X509Certificate(certPem);
    if (!cert.checkPrivateKey(createPrivateKey(privateKey))) throw new Error('issued certificate does not match the workload key');
    const creds: Credentials = Object.freeze({
      keyPem: privateKey,
      certPem,
      caPem,
      id: this.id,
      uri: spiffeUri(this.id),
      serial: cert.serialNumber,
      notBefore: Date.parse(cert.validFrom),
      notAfter: Date.parse(cert.validTo),
    });
    const first = this.credentials.get() === undefined;
    this.credentials.set(creds);
    this.deps.telemetry.certificateExpiry.set(creds.notAfter / 1000);
    this.deps.log.info(first ? 'certificate_loaded' : 'certificate_rotated', {
      spiffe_id: creds.uri, serial: creds.serial, not_after: new Date(creds.notAfter).toISOString(),
    });
    // The CA backdates notBefore for clock skew; 70 % is of the lifetime we were actually given, or a short TTL
    // would be renewed almost at once.
    return { notBeforeMs: Math.max(creds.notBefore, issuedAt), notAfterMs: creds.notAfter };
  }

  stop(): void {
    this.rotation?.stop();
  }
}
