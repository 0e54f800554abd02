// Starts the NHS design system's components (the header's menu, the
// error summary's focus). The pages work without it.
import { initAll } from './nhsuk/nhsuk-frontend.min.js'

document.body.classList.add('js-enabled', 'nhsuk-frontend-supported')
initAll()
