# Build and test FlashDmAttn (same verbs as build.sh).
#   ./build.ps1 build          native library (when nvcc exists) and managed code (when the .NET SDK exists)
#   ./build.ps1 test [args]    build what can be built, then run the built test executable; extra args go to it
#   ./build.ps1 bench          benchmarks
$ErrorActionPreference = 'Stop'
Set-Location $PSScriptRoot

$verb = if ($args.Count -gt 0) { $args[0] } else { '' }
$rest = if ($args.Count -gt 1) { $args[1..($args.Count - 1)] } else { @() }

$nativeDir = 'build/native'
$testDll = 'artifacts/bin/FlashDmAttn.Tests/release/FlashDmAttn.Tests.dll'

function Test-Command($name) { [bool](Get-Command $name -ErrorAction SilentlyContinue) }
function Test-DotnetSdk { (Test-Command dotnet) -and [bool](& dotnet --list-sdks 2>$null) }

function Invoke-Checked {
    & $args[0] $args[1..($args.Count - 1)]
    if ($LASTEXITCODE -ne 0) { throw "$($args -join ' ') failed with exit code $LASTEXITCODE" }
}

function Invoke-Build {
    if (Test-Command nvcc) {
        Invoke-Checked cmake -S . -B $nativeDir -DCMAKE_BUILD_TYPE=Release
        Invoke-Checked cmake --build $nativeDir --config Release -j
    } else {
        Write-Host 'build.ps1: no nvcc: skipping the native library'
    }
    if (Test-DotnetSdk) {
        Invoke-Checked dotnet build FlashDmAttn.sln -c Release
    } else {
        Write-Host 'build.ps1: no .NET SDK: skipping the managed build'
    }
}

function Find-NativeLibrary {
    foreach ($candidate in "$nativeDir/libflash_dmattn.so", "$nativeDir/Release/flash_dmattn.dll", "$nativeDir/flash_dmattn.dll") {
        if (Test-Path $candidate) { return (Resolve-Path $candidate).Path }
    }
    return $null
}

function Invoke-Tests {
    Invoke-Build
    if (-not (Test-Path $testDll)) {
        Write-Error "build.ps1: $testDll is missing (build it where the .NET SDK is installed)"
    }
    $native = Find-NativeLibrary
    if (-not $env:FLASHDMATTN_NATIVE_LIBRARY -and $native) { $env:FLASHDMATTN_NATIVE_LIBRARY = $native }
    Write-Host "build.ps1: native library: $(if ($env:FLASHDMATTN_NATIVE_LIBRARY) { $env:FLASHDMATTN_NATIVE_LIBRARY } else { '(none: GPU tests will be skipped)' })"

    & dotnet $testDll --progress off --ansi off --show-test-results failed,skipped --show-stdout failed @rest 2>&1 | ForEach-Object { $_.ToString() } | Tee-Object -Variable lines
    $rc = $LASTEXITCODE

    # Microsoft.Testing.Platform ends with a summary: "  total: N", "  failed: N", "  succeeded: N", "  skipped: N".
    function Get-Count($name) {
        $hit = $lines | Select-String -Pattern "^\s*${name}:\s*(\d+)" | Select-Object -Last 1
        if ($hit) { [int]$hit.Matches[0].Groups[1].Value } else { $null }
    }
    $passed = Get-Count 'succeeded'; $failed = Get-Count 'failed'; $skipped = Get-Count 'skipped'
    if ($null -eq $passed -or $null -eq $failed -or $null -eq $skipped) {
        Write-Host "build.ps1: no test summary found (test executable exit code $rc)"
        exit $(if ($rc -ne 0) { $rc } else { 1 })
    }
    Write-Host "$passed passed, $failed failed, $skipped skipped"
    if ($failed -ne 0 -or $rc -ne 0) { exit $(if ($rc -ne 0) { $rc } else { 1 }) }
}

switch ($verb) {
    'build' { Invoke-Build }
    'test' { Invoke-Tests }
    'bench' { Write-Host 'build.ps1: benchmarks arrive with the bench project' }
    default { Write-Host 'usage: ./build.ps1 build | test [test args...] | bench'; exit 2 }
}
