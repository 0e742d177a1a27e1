// Workload credentials: a key made here, a certificate from a CertificateSource, renewed at 70 % of its lifetime and swapped atomically.
import { createPrivateKey, generateKeyPair, X509Certificate } from 'node:crypto';
import { promisify } from 'node:util';
import type { Clock, Random, Timer } from '../api/clock.js';
import type { Logger } from '../api/log.js';
import type { CertificateAuthority } from '../certs/ca.js';
import { signCsr } from '../certs/issue.js';
import { renewAt, retryDelay } from '../certs/rotation.js';
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
  rotations = 0;
  private timer: Timer | undefined;
  private failures = 0;
  private stopped = false;

  constructor(private readonly source: CertificateSource, private readonly id: SpiffeId, private readonly deps: CredentialDeps) {}

  /** Obtains the first certificate; rejects if that fails, so a sidecar never serves without one. */
  async start(): Promise<void> {
    await this.renew();
  }

  /** One renewal: new key (generated off the event loop), CSR, signature, swap, next schedule. */
  private async renew(): Promise<void> {
    const { privateKey } = await generateKeyPairAsync('rsa', {
      modulusLength: 2048,
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    });
    const csr = createCsr({ keyPem: privateKey }, this.id);
    const { certPem, caPem } = await this.source.sign(csr, this.id);
    const cert = new X509Certificate(certPem);
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
    if (!cert.checkPrivateKey(createPrivateKey(privateKey))) {
      throw new Error('issued certificate does not match the workload key');
    }
    const first = this.credentials.get() === undefined;
    this.credentials.set(creds);
    if (!first) this.rotations++;
    this.failures = 0;
    this.deps.telemetry.certificateExpiry.set(creds.notAfter / 1000);
    this.deps.log.info(first ? 'certificate_loaded' : 'certificate_rotated', {
      spiffe_id: creds.uri, serial: creds.serial, not_after: new Date(creds.notAfter).toISOString(),
    });
    this.schedule(renewAt(creds.notBefore, creds.notAfter, this.deps.wallNow()) - this.deps.wallNow());
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer?.cancel();
    this.timer = this.deps.clock.setTimeout(() => {
      this.renew().catch((err: unknown) => {
        this.failures++;
        const creds = this.credentials.get();
        const left = creds ? creds.notAfter - this.deps.wallNow() : 0;
        this.deps.log.error('certificate_renewal_failed', { error: err, attempt: this.failures, expires_in_ms: left });
        this.schedule(retryDelay(this.failures, this.deps.random));
      });
    }, Math.max(0, delayMs));
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
  }
}
