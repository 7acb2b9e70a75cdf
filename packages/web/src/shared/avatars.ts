/**
 * The demo's built-in avatar pictures. They are drawn here as SVG and written next to the pages by
 * the build, so the demo shows pictures without fetching anything from elsewhere. `meta.avatar`
 * carries the picture's path (`avatars/wave.svg`); any https URL works as well.
 */
export interface AvatarPicture {
  id: string;
  label: string;
  background: string;
  /** SVG elements drawn over the background, in a 64×64 box. */
  shape: string;
}

export const AVATAR_PICTURES: readonly AvatarPicture[] = [
  { id: 'sun', label: 'Sun', background: '#fde68a', shape: '<circle cx="32" cy="32" r="12" fill="#d97706"/><g stroke="#d97706" stroke-width="4" stroke-linecap="round"><path d="M32 8v8M32 48v8M8 32h8M48 32h8M15 15l6 6M43 43l6 6M15 49l6-6M43 21l6-6"/></g>' },
  { id: 'wave', label: 'Wave', background: '#bae6fd', shape: '<path d="M6 38c8-10 14-10 22 0s14 10 22 0 8-6 8-6v26H6z" fill="#0369a1"/><path d="M6 28c8-10 14-10 22 0s14 10 22 0" fill="none" stroke="#0ea5e9" stroke-width="4"/>' },
  { id: 'leaf', label: 'Leaf', background: '#bbf7d0', shape: '<path d="M14 50C14 26 30 12 52 12c0 24-14 40-38 38z" fill="#15803d"/><path d="M16 48 44 20" stroke="#bbf7d0" stroke-width="3"/>' },
  { id: 'star', label: 'Star', background: '#ddd6fe', shape: '<path d="m32 10 6.5 14 15.5 1.8-11.5 10.6 3.2 15.2L32 44l-13.7 7.6 3.2-15.2L10 25.8l15.5-1.8z" fill="#6d28d9"/>' },
  { id: 'moon', label: 'Moon', background: '#1e293b', shape: '<path d="M40 12a20 20 0 1 0 12 32A16 16 0 0 1 40 12z" fill="#f8fafc"/><circle cx="20" cy="18" r="2" fill="#f8fafc"/><circle cx="50" cy="24" r="1.5" fill="#f8fafc"/>' },
  { id: 'bolt', label: 'Bolt', background: '#fecaca', shape: '<path d="M36 6 14 36h14l-4 22 26-32H36z" fill="#b91c1c"/>' },
];

export function avatarPath(id: string): string {
  return `avatars/${id}.svg`;
}

export function avatarSvg(picture: AvatarPicture): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64" width="64" height="64"><rect width="64" height="64" fill="${picture.background}"/>${picture.shape}</svg>\n`;
}
