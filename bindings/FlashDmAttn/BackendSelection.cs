namespace FlashDmAttn;

/// <summary>The backend calls on a device run with, and why it is not the native library when it is not.</summary>
/// <param name="Backend"><see cref="FlashDmAttnBackend.Native"/> or <see cref="FlashDmAttnBackend.Nvrtc"/>, never Auto.</param>
/// <param name="FallbackReason">
/// After <see cref="FlashDmAttnBackend.Auto"/> fell back to NVRTC: why the native library was unusable (the
/// failure's message). <c>null</c> when nothing fell back: the native library was usable, or a backend was forced.
/// </param>
public sealed record BackendSelection(FlashDmAttnBackend Backend, string? FallbackReason);
