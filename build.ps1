# Build, test and pack FlashDmAttn (same verbs as build.sh).
#   ./build.ps1 build          native library (when nvcc exists) and managed code (when the .NET SDK exists)
#   ./build.ps1 test [args]    build what can be built, then run the built test executable; extra args go to it
#   ./build.ps1 pack           NuGet packages in artifacts/packages: FlashDmAttn.runtime.<rid> (win-x64 on Windows)
#                              where nvcc and python exist, FlashDmAttn where the .NET SDK exists
#   ./build.ps1 sample [--runtime RID]
#                              restore, build and run samples/csharp from artifacts/packages (see build.sh)
#   ./build.ps1 bench [args]   benchmarks against PyTorch on this GPU (see build.sh: the same steps and arguments)
$ErrorActionPreference = 'Stop'
Set-Location $PSScriptRoot

$verb = if ($args.Count -gt 0) { $args[0] } else { '' }
$rest = if ($args.Count -gt 1) { $args[1..($args.Count - 1)] } else { @() }

$nativeDir = 'build/native'
$testDll = 'artifacts/bin/FlashDmAttn.Tests/release/FlashDmAttn.Tests.dll'
$benchDll = 'artifacts/bin/FlashDmAttn.Bench/release/FlashDmAttn.Bench.dll'
$benchWork = 'build/bench'
$packagesDir = 'artifacts/packages'
$sampleDll = 'artifacts/sample/FlashDmAttn.Sample.dll'

function Test-Command($name) { [bool](Get-Command $name -ErrorAction SilentlyContinue) }
function Test-DotnetSdk { (Test-Command dotnet) -and [bool](& dotnet --list-sdks 2>$null) }

function Invoke-Checked {
    & $args[0] $args[1..($args.Count - 1)]
    if ($LASTEXITCODE -ne 0) { throw "$($args -join ' ') failed with exit code $LASTEXITCODE" }
}

function Find-Python {
    if (Test-Command python3) { 'python3' } elseif (Test-Command python) { 'python' } else { $null }
}

# FDMA_CUDA_ARCHITECTURES narrows the build; without it the build has CMake's default architectures again, whatever an
# earlier narrowed build left in the cache.
function Invoke-NativeBuild {
    $archs = if ($env:FDMA_CUDA_ARCHITECTURES) { @("-DFDMA_CUDA_ARCHITECTURES=$env:FDMA_CUDA_ARCHITECTURES") } else { @('-UFDMA_CUDA_ARCHITECTURES') }
    Invoke-Checked cmake -S . -B $nativeDir -DCMAKE_BUILD_TYPE=Release @archs
    Invoke-Checked cmake --build $nativeDir --config Release -j
}

function Invoke-Build {
    if (Test-Command nvcc) {
        Invoke-NativeBuild
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

function Invoke-Pack {
    if (-not $env:SOURCE_DATE_EPOCH) {
        $commitTime = & git log -1 --format=%ct 2>$null
        if ($LASTEXITCODE -eq 0 -and $commitTime) { $env:SOURCE_DATE_EPOCH = $commitTime }
    }
    New-Item -ItemType Directory -Force $packagesDir | Out-Null
    $python = Find-Python
    if ((Test-Command nvcc) -and $python) {
        Invoke-NativeBuild
        $archs = (Select-String -Path "$nativeDir/CMakeCache.txt" -Pattern '^FDMA_CUDA_ARCHITECTURES:[A-Z]*=(.*)$').Matches[0].Groups[1].Value
        $rid = [System.Runtime.InteropServices.RuntimeInformation]::RuntimeIdentifier
        Invoke-Checked $python packaging/pack_runtime.py --rid $rid --library (Find-NativeLibrary) --archs $archs --out $packagesDir
    } else {
        Write-Host 'build.ps1: no nvcc or no python: no runtime package'
    }
    if (Test-DotnetSdk) {
        Invoke-Checked dotnet pack bindings/FlashDmAttn/FlashDmAttn.csproj -c Release -o $packagesDir
    } else {
        Write-Host 'build.ps1: no .NET SDK: no managed package'
    }
    Write-Host "build.ps1: packages in ${packagesDir}:"
    Get-ChildItem $packagesDir | ForEach-Object { Write-Host "  $($_.Name) ($($_.Length) bytes)" }
}

function Invoke-Sample {
    $restoreArgs = @()
    if ($rest.Count -eq 2 -and $rest[0] -eq '--runtime') {
        $restoreArgs = @('-r', $rest[1])
    } elseif ($rest.Count -ne 0) {
        Write-Host 'usage: ./build.ps1 sample [--runtime RID]'; exit 2
    }
    $sampleOut = Split-Path $sampleDll
    if (Test-DotnetSdk) {
        # A packages folder of its own: the user-wide one would keep an earlier package of the same version.
        Remove-Item -Recurse -Force 'build/sample-packages', $sampleOut -ErrorAction SilentlyContinue
        Invoke-Checked dotnet restore samples/csharp @restoreArgs --packages build/sample-packages
        Invoke-Checked dotnet build samples/csharp --no-restore -c Release @restoreArgs -o $sampleOut
    } else {
        Write-Host 'build.ps1: no .NET SDK: running the sample built before'
    }
    if (-not (Test-Path $sampleDll)) {
        Write-Error "build.ps1: $sampleDll is missing (build it where the .NET SDK is installed)"
    }
    Invoke-Checked dotnet $sampleDll
}

function Test-Gpu {
    (Test-Command nvidia-smi) -and [bool](& nvidia-smi -L 2>$null)
}

function Invoke-Bench {
    Invoke-Build
    if (-not (Test-Path $benchDll)) {
        Write-Error "build.ps1: $benchDll is missing (build it where the .NET SDK is installed)"
    }
    $native = Find-NativeLibrary
    if (-not $env:FLASHDMATTN_NATIVE_LIBRARY -and $native) { $env:FLASHDMATTN_NATIVE_LIBRARY = $native }
    if (-not (Test-Gpu)) {
        Write-Host 'build.ps1: GPU benchmarks need a CUDA device, and this machine has none.'
        Invoke-Checked dotnet $benchDll --cpu-reference
        return
    }

    # The suite is defined once, in the benchmark executable; the baselines receive its list of rows.
    $listArgs = @()
    for ($i = 0; $i -lt $rest.Count; $i++) {
        if ($rest[$i] -eq '--quick') { $listArgs += '--quick' }
        if ($rest[$i] -eq '--filter' -and $i + 1 -lt $rest.Count) { $listArgs += '--filter', $rest[$i + 1] }
    }
    New-Item -ItemType Directory -Force $benchWork | Out-Null
    Remove-Item -Recurse -Force "$benchWork/exchange", "$benchWork/baselines.json" -ErrorAction SilentlyContinue
    $baselineArgs = @()
    $python = Find-Python
    $hasTorch = $false
    if ($python) {
        & $python -c 'import torch, triton' 2>$null | Out-Null
        $hasTorch = $LASTEXITCODE -eq 0
    }
    if ($hasTorch) {
        & dotnet $benchDll --list-cases @listArgs | Set-Content -Encoding utf8NoBOM "$benchWork/cases.json"
        $env:PYTHONUNBUFFERED = '1'
        & $python bench/baselines.py --cases "$benchWork/cases.json" --out "$benchWork/baselines.json" --exchange "$benchWork/exchange"
        if ($LASTEXITCODE -ne 0) { Write-Host 'build.ps1: bench/baselines.py failed; merging the rows it finished' }
        if (Test-Path "$benchWork/baselines.json") {
            $baselineArgs = @('--baselines', "$benchWork/baselines.json", '--exchange', "$benchWork/exchange")
        }
    } else {
        Write-Host 'build.ps1: no python with torch and triton: the report will hold our kernel only'
    }

    $commit = if ($env:FDMA_BENCH_COMMIT) { $env:FDMA_BENCH_COMMIT } else { (& git rev-parse --short HEAD 2>$null) }
    if (-not $commit) { $commit = 'unknown' }
    Invoke-Checked dotnet $benchDll @baselineArgs --work $benchWork --commit $commit @rest
}

switch ($verb) {
    'build' { Invoke-Build }
    'test' { Invoke-Tests }
    'pack' { Invoke-Pack }
    'sample' { Invoke-Sample }
    'bench' { Invoke-Bench }
    default { Write-Host 'usage: ./build.ps1 build | test [test args...] | pack | sample [--runtime RID] | bench [--quick] [bench args...]'; exit 2 }
}
