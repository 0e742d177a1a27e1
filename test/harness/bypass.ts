// Test data: spellings of a denied path (`/admin/panel`) that a lenient backend might still map to it.

export function denyBypassCandidates(): string[] {
  const out = new Set<string>();
  const dots = ['..', '%2e%2e', '%2E%2E', '.%2e', '%2e.'];
  const dot = ['.', '%2e', '%2E'];
  for (const d of dots) {
    out.add(`/x/${d}/admin/panel`);
    out.add(`/admin/x/${d}/panel`);
    out.add(`/x/y/${d}/${d}/admin/panel`);
  }
  for (const d of dot) {
    out.add(`/${d}/admin/panel`);
    out.add(`/admin/${d}/panel`);
  }
  for (const s of ['//', '///']) {
    out.add(`${s}admin/panel`);
    out.add(`/admin${s}panel`);
  }
  for (const c of ['ADMIN', 'Admin', 'aDmIn', '%41dmin', '%61dmin', 'adm%69n', '%61%64%6d%69%6e']) {
    out.add(`/${c}/panel`);
    out.add(`/${c}/PANEL`);
  }
  for (const p of [';', ';x', ';jsessionid=1', ';a=b;c=d']) {
    out.add(`/admin${p}/panel`);
    out.add(`/admin/panel${p}`);
  }
  for (const e of ['%2f', '%2F', '%5c', '%5C', '\\', '%00', '%23', '#']) {
    out.add(`/admin${e}panel`);
    out.add(`/x${e}..${e}admin/panel`);
  }
  for (const d of dots) {
    out.add(`/x/${d}/ADMIN/panel`);
    out.add(`/x/${d}/%61dmin/panel`);
  }
  for (const o of ['/%c0%ae%c0%ae/admin/panel', '/x/%c0%ae%c0%ae/admin/panel', '/admin%c0%afpanel', '/admin%c1%9cpanel', '/%e0%80%ae%e0%80%ae/admin/panel']) out.add(o);
  out.add('//ADMIN//panel');
  out.add('/admin;x/PANEL');
  out.add('/./ADMIN/./panel');
  out.add('/admin/panel/');
  out.add('/admin/panel?x=1');
  out.add('/admin/panel/.');
  out.add('/admin/panel/x/..');
  return [...out];
}

